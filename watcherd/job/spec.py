"""Job files: their schema, and turning bytes into a JobSpec or a clear error.

Parsing is pure (bytes and config in, spec or InvalidJob out) so that
``watcherd validate`` and the daemon give exactly the same answers.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from watcherd.agents import AGENTS
from watcherd.agents.base import MAX_TURNS, MODEL, RESUME, REVIEW
from watcherd.config import MIN_CPUS, Config
from watcherd.config.publish import PUBLISH_MODES
from watcherd.repo.url import (
    RepoUrlError,
    check_repo_url,
    is_safe_segment,
    repo_host,
    repo_name,
)
from watcherd.spool.folders import MAX_JOB_BYTES
from watcherd.util.envnames import check_env
from watcherd.util.units import parse_duration, parse_size
from watcherd.util.yamlsafe import DuplicateKeyError, UniqueKeyLoader

MODES = ("exec", "review")

_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")
_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/@+-]{0,199}$")
_BRANCH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,99}$")
RESULT_BRANCH_PREFIX = "watcherd/"  # the daemon's own branch names; no job may take one


class InvalidJob(ValueError):
    """A job file that can never run. ``str()`` names the key or line and the problem."""


@dataclass(frozen=True)
class JobSpec:
    repo_url: str
    prompt: str
    repo_dir: str
    repo_ref: str | None = None
    mode: str = "exec"
    flags: tuple[str, ...] = ()
    model: str | None = None
    timeout: float = 3600.0
    retries: int = 2
    memory: int | None = None
    cpus: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    branch: str | None = None  # the result branch; default watcherd/<job id>
    disk: int | None = None  # disk budget in bytes, at most the daemon's
    notify: tuple[str, ...] = ()  # names of the config's notify targets, besides its defaults
    agent: str = "codex"
    max_turns: int | None = None
    resume: str | None = None  # the name or id of an earlier job whose session goes on
    pool: str | None = None  # a placement pool of the config's (Swarm backend)
    # Beyond its model: "model" (nothing else), "open" (a network of its own, where the
    # operator allows it), or the names of the operator's egress allowlists.
    network: str | tuple[str, ...] = "model"
    token_budget: int | None = None  # input + output tokens; None: the config's
    network_tools: bool = False  # provider-side web search and fetch, where allowed
    # After it is done: push its branch (branch) and open a pull request (draft, ready),
    # or not (none). None: the config's default for its repository (README "Publishing").
    publish: str | None = None

    @property
    def max_attempts(self) -> int:
        return self.retries + 1


KEYS = frozenset(
    {
        "repo_url", "prompt", "repo_ref", "repo_dir", "mode", "flags", "model",
        "timeout", "env", "retries", "memory", "cpus", "branch", "disk", "notify",
        "agent", "max_turns", "resume", "pool", "network", "token_budget", "network_tools",
        "publish",
    }
)  # fmt: skip


def parse_job(data: bytes, config: Config) -> JobSpec:
    """The JobSpec in a job file's bytes, or InvalidJob saying what is wrong."""
    if len(data) > MAX_JOB_BYTES:
        raise InvalidJob(f"file is {len(data)} bytes; job files are limited to {MAX_JOB_BYTES}")
    if b"\x00" in data:
        raise InvalidJob("file contains NUL bytes; a job file is UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJob(f"file is not UTF-8 text (bad byte at offset {exc.start})") from exc
    document = _load_yaml(text)
    if not isinstance(document, dict):
        kind = "empty" if document is None else f"a {type(document).__name__}"
        raise InvalidJob(f"expected a mapping of keys (repo_url, prompt, ...), the file is {kind}")
    return _spec_from_mapping(document, config)


class _JobLoader(UniqueKeyLoader):
    """Safe YAML without anchors and aliases: a job file has no use for them, and
    refusing them rules out alias bombs whatever the parser does with them. Duplicate
    keys are refused too (UniqueKeyLoader), at any depth."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
            raise InvalidJob(f"line {line}: YAML aliases (*name) are not allowed in job files")
        return super().compose_node(parent, index)


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_JobLoader)  # a SafeLoader subclass
    except DuplicateKeyError as exc:
        raise InvalidJob(str(exc)) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise InvalidJob(f"YAML syntax error: {where}{exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise InvalidJob(f"YAML error: {exc}") from exc
    except RecursionError as exc:
        raise InvalidJob("YAML is nested too deeply") from exc


def _spec_from_mapping(doc: dict[Any, Any], config: Config) -> JobSpec:
    errors: list[str] = []
    unknown = sorted(str(k) for k in doc if k not in KEYS)
    if unknown:
        errors.append(f"unknown key(s): {', '.join(unknown)} (allowed: {', '.join(sorted(KEYS))})")
    values: dict[str, Any] = {}
    for key, check in _CHECKS.items():
        if key not in doc:
            continue
        if _has_nul(doc[key]):  # YAML's \0: no raw NUL byte, but one all the same
            errors.append(f"{key}: contains a NUL character, which no process can be given")
            continue
        try:
            values[key] = check(doc[key], config)
        except (TypeError, ValueError) as exc:
            errors.append(f"{key}: {exc}")
    for key in ("repo_url", "prompt"):
        if key not in doc:
            errors.append(f"{key}: required")
    if "repo_url" in values and "repo_dir" not in doc:
        default_dir = repo_name(values["repo_url"])
        if is_safe_segment(default_dir):
            values["repo_dir"] = default_dir
        else:
            errors.append("repo_dir: cannot derive a safe folder name from repo_url; set repo_dir")
    values.setdefault("agent", config.default_agent)
    errors += _unsupported(values)
    errors += _refused_flags(values)
    errors += _unpublishable(values, config)
    if errors:
        raise InvalidJob("; ".join(errors))
    values.setdefault("timeout", config.default_timeout)
    values.setdefault("retries", config.retries)
    return JobSpec(**values)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


# Job keys an agent must support, and how a job asks for them.
_AGENT_KEYS: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "model": (MODEL, lambda v: v.get("model") is not None),
    "max_turns": (MAX_TURNS, lambda v: v.get("max_turns") is not None),
    "resume": (RESUME, lambda v: v.get("resume") is not None),
    "mode": (REVIEW, lambda v: v.get("mode") == "review"),
}


def _unsupported(values: dict[str, Any]) -> list[str]:
    """A key that means the same for every agent, refused where the agent lacks it."""
    profile = AGENTS.get(values["agent"])
    if profile is None:
        return []  # already reported by the agent check
    return [
        f"{key}: {profile.name} does not support {key}"
        + (" (review is Codex's)" if capability == REVIEW else "")
        for key, (capability, asked) in _AGENT_KEYS.items()
        if asked(values) and capability not in profile.supports
    ]


def _refused_flags(values: dict[str, Any]) -> list[str]:
    """Flags the agent does not take from a job: only its allowlist passes. What could set a
    provider, a base URL, a sandbox or approval mode, an MCP server or a settings file is not
    on any list; ``--`` would end the options and make the rest arguments."""
    profile = AGENTS.get(values["agent"])
    if profile is None:
        return []
    refused = [
        flag for flag in values.get("flags", ())
        if flag.startswith("-") and flag.split("=", 1)[0] not in profile.allowed_flags
    ]  # fmt: skip
    if not refused:
        return []
    allowed = ", ".join(sorted(profile.allowed_flags)) or "none"
    return [
        f"flags: {profile.name} does not take {', '.join(map(repr, refused))} from a job "
        f"(allowed: {allowed}; providers, sandbox and settings are the operator's)"
    ]


def _unpublishable(values: dict[str, Any], config: Config) -> list[str]:
    """A job that asks to publish (or whose repository's default does) where the config
    names no forge for its host: said now, not after the work is done."""
    if "repo_url" not in values:
        return []
    mode = config.publish.mode_for(values["repo_url"], values.get("publish"))
    if mode == "none":
        return []
    host = repo_host(values["repo_url"])
    if host is not None and config.publish.forge_for(host) is not None:
        return []
    configured = ", ".join(sorted(config.publish.forges)) or "none are configured"
    return [f"publish: {mode} needs a forge for {host or 'this repository'} in the daemon's "
            f"config (publish.forges: {configured})"]  # fmt: skip


def _check_publish(value: Any, config: Config) -> str:
    if value not in PUBLISH_MODES:
        got = repr(value) if isinstance(value, str) else _kind(value)
        raise ValueError(f"expected one of {', '.join(PUBLISH_MODES)}, got {got}")
    return str(value)


def _check_network(value: Any, config: Config) -> str | tuple[str, ...]:
    if value == "model":
        return "model"
    if value == "open":
        if not config.allow_open_network:
            raise ValueError("'open' is not allowed by the daemon's config (allow_open_network)")
        return "open"
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise ValueError(f"expected model, open, or a list of egress names, got {_kind(value)}")
    unknown = [n for n in names if n not in config.egress]
    if unknown:
        offered = ", ".join(sorted(config.egress)) or "none are configured"
        raise ValueError(f"no egress allowlist named {', '.join(map(repr, unknown))} in the "
                         f"daemon's config (egress: {offered})")  # fmt: skip
    return tuple(dict.fromkeys(names))


def _check_token_budget(value: Any, config: Config) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number of tokens (at least 1), got {value!r}")
    return value


def _check_network_tools(value: Any, config: Config) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_kind(value)}")
    if value and not config.allow_network_tools:
        raise ValueError("provider-side network tools are not allowed by the daemon's config "
                         "(allow_network_tools)")  # fmt: skip
    return value


def _check_agent(value: Any, config: Config) -> str:
    name = _string(value)
    if name not in AGENTS:
        raise ValueError(f"{name!r} is not an agent (one of {', '.join(sorted(AGENTS))})")
    return name


def _check_max_turns(value: Any, config: Config) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {_kind(value)}")
    if not 1 <= value <= 1000:
        raise ValueError(f"must be between 1 and 1000, got {value}")
    return value


def _check_resume(value: Any, config: Config) -> str:
    name = _string(value)
    if "/" in name or name.startswith(".") or len(name) > 200:
        raise ValueError(f"{name!r} is not the name or id of a job")
    return name


def _string(value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)}")
    if not allow_empty and not value.strip():
        raise ValueError("must not be empty")
    return value


def _kind(value: Any) -> str:
    return "nothing (null)" if value is None else type(value).__name__


def _check_repo_url(value: Any, config: Config) -> str:
    try:
        return check_repo_url(_string(value), config.allowed_repos, config.allowed_protocols)
    except RepoUrlError as exc:
        raise ValueError(str(exc)) from exc


def _check_prompt(value: Any, config: Config) -> str:
    return _string(value)


def _check_repo_ref(value: Any, config: Config) -> str:
    ref = _string(value)
    if not _REF.fullmatch(ref) or ".." in ref:
        raise ValueError(f"{ref!r} is not a branch, tag or commit name")
    return ref


def _check_repo_dir(value: Any, config: Config) -> str:
    name = _string(value)
    if not is_safe_segment(name):
        raise ValueError(
            f"{name!r} must be one folder name of letters, digits, '.', '_' or '-', "
            "not starting with '.' or '-'"
        )
    return name


def _check_branch(value: Any, config: Config) -> str:
    name = _string(value)
    parts = name.split("/")
    if (
        not _BRANCH.fullmatch(name)
        or ".." in name
        or any(not part or part.startswith(".") or part.endswith(".lock") for part in parts)
        or name.endswith(".")
    ):
        raise ValueError(f"{name!r} is not a branch name (letters, digits, '.', '_', '-', '/')")
    if name.startswith(RESULT_BRANCH_PREFIX):
        raise ValueError(f"{name!r}: branches under {RESULT_BRANCH_PREFIX} are the daemon's own")
    return name


def _check_disk(value: Any, config: Config) -> int:
    size = parse_size(value)
    if size > config.disk_budget:
        raise ValueError(f"{size} bytes is more than the daemon's budget of {config.disk_budget}")
    return size


def _check_mode(value: Any, config: Config) -> str:
    if value not in MODES:
        raise ValueError(f"expected one of {', '.join(MODES)}, got {value!r}")
    return str(value)


def _check_flags(value: Any, config: Config) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise ValueError(f"cannot split like a shell: {exc}") from exc
    if isinstance(value, list) and all(isinstance(flag, str) for flag in value):
        return tuple(value)
    raise ValueError(f"expected a list of strings or one string, got {_kind(value)}")


def _check_model(value: Any, config: Config) -> str:
    model = _string(value)
    if not _MODEL.fullmatch(model):
        raise ValueError(f"{model!r} is not a model name")
    return model


def _check_timeout(value: Any, config: Config) -> float:
    seconds = parse_duration(value)
    if seconds > config.max_timeout:
        raise ValueError(f"{seconds:.0f}s is more than the maximum of {config.max_timeout:.0f}s")
    return seconds


def _check_retries(value: Any, config: Config) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {_kind(value)}")
    if not 0 <= value <= config.max_retries:
        raise ValueError(f"must be between 0 and {config.max_retries}, got {value}")
    return value


def _check_memory(value: Any, config: Config) -> int:
    size = parse_size(value)
    if size > config.memory_limit:
        raise ValueError(f"{size} bytes is more than the daemon's limit of {config.memory_limit}")
    return size


def _check_cpus(value: Any, config: Config) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {_kind(value)}")
    if not MIN_CPUS <= value <= config.cpus:
        # Below Docker's minimum a container is refused, and a Swarm service reads the
        # 0 nano-CPUs it rounds to as no limit at all.
        raise ValueError(f"must be at least {MIN_CPUS} and at most {config.cpus}, got {value}")
    return float(value)


def _check_env(value: Any, config: Config) -> dict[str, str]:
    return check_env(value, setter="a job")


def _check_notify(value: Any, config: Config) -> tuple[str, ...]:
    """Names of targets the operator configured; a job never gives a URL or a command."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"expected a list of target names, got {_kind(value)}")
    unknown = [name for name in names if name not in config.notify]
    if unknown:
        configured = ", ".join(sorted(config.notify)) or "none are configured"
        raise ValueError(
            f"no notify target named {', '.join(map(repr, unknown))} in the daemon's config "
            f"(targets: {configured})"
        )
    return tuple(dict.fromkeys(names))


def _check_pool(value: Any, config: Config) -> str:
    """A pool the operator named; a job never gives raw placement constraints."""
    if not isinstance(value, str):
        raise ValueError(f"expected a pool name, got {_kind(value)}")
    if value not in config.pools:
        configured = ", ".join(sorted(config.pools)) or "none are configured"
        raise ValueError(f"no pool named {value!r} in the daemon's config (pools: {configured})")
    return value


_CHECKS = {
    "repo_url": _check_repo_url,
    "prompt": _check_prompt,
    "repo_ref": _check_repo_ref,
    "repo_dir": _check_repo_dir,
    "mode": _check_mode,
    "flags": _check_flags,
    "model": _check_model,
    "timeout": _check_timeout,
    "retries": _check_retries,
    "memory": _check_memory,
    "cpus": _check_cpus,
    "env": _check_env,
    "branch": _check_branch,
    "disk": _check_disk,
    "notify": _check_notify,
    "agent": _check_agent,
    "max_turns": _check_max_turns,
    "resume": _check_resume,
    "pool": _check_pool,
    "network": _check_network,
    "token_budget": _check_token_budget,
    "network_tools": _check_network_tools,
    "publish": _check_publish,
}
