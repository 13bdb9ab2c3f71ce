"""The daemon's configuration: built once (file, then environment) and passed down."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from watcherd.agents import AGENTS
from watcherd.config.agents import AgentSettings, parse_agent_settings
from watcherd.config.hooks import Hook, parse_hooks
from watcherd.config.mcp import McpSettings, parse_mcp_settings
from watcherd.config.notify import NotifyTarget, parse_targets
from watcherd.config.publish import PublishSettings, parse_publish
from watcherd.config.relay import RelaySettings, parse_relay_settings
from watcherd.config.schedules import Schedule, parse_schedules, schedule_problems
from watcherd.config.serve import ServeSettings, parse_serve_settings
from watcherd.gateway.egress import Allowlist, parse_allowlists
from watcherd.repo.url import DEFAULT_PROTOCOLS, KNOWN_PROTOCOLS
from watcherd.util.envnames import check_env
from watcherd.util.units import parse_duration, parse_size
from watcherd.util.yamlsafe import DuplicateKeyError
from watcherd.util.yamlsafe import load as load_yaml

DEFAULT_CONFIG_PATH = Path("/etc/watcherd/config.yaml")
DEFAULT_IMAGE = "watcherd-codex:0.171.0"
NETWORK_MODES = ("bridge", "none", "host")
BACKENDS = ("local", "swarm")
AUTH_MODES = ("login", "api_key", "none")
DISK_BOUNDS = ("auto", "require", "poll")

# Floors for the per-container caps. Docker reads a pids limit of 0 or -1 as "no limit",
# which would remove the guard against fork bombs; and the pids cgroup counts threads, so
# Codex's own runtime threads, git's helpers and the agent's shell need a few dozen.
MIN_PIDS_LIMIT = 64
# Docker refuses less than 6 MiB, but git and Codex are killed for memory well below
# 64 MiB: a lower cap would only make every job fail late and obscurely.
MIN_MEMORY_LIMIT = 64 * 1024**2
MIN_DISK_BUDGET = 16 * 1024**2  # a checkout of a small repository and the outputs
MIN_LOG_MAX_SIZE = 64 * 1024  # the worker's own lines about a job
# Docker's own minimum (NanoCPUs >= 1e7); below it every container start is refused.
MIN_CPUS = 0.01


class ConfigError(ValueError):
    """The config file or an override is wrong; the message names the key."""


@dataclass(frozen=True)
class Config:
    root: Path = Path("/work")
    image: str = DEFAULT_IMAGE
    # Build context of the worker image; None means the image/ folder of this checkout.
    image_dir: Path | None = None
    # Extra CA certificates trusted inside the worker image (TLS-intercepting proxies).
    ca_certs: tuple[Path, ...] = ()
    concurrency: int = 2
    # Jobs made ready (claimed, workspace, container made, not started) while every slot is
    # busy; None: as many as the concurrency, 0: none (README "Running jobs").
    prepare_ahead: int | None = None
    settle_seconds: float = 0.2
    rescan_seconds: float = 30.0
    default_timeout: float = 3600.0
    max_timeout: float = 24 * 3600.0
    retries: int = 2
    max_retries: int = 10
    backoff_initial: float = 2.0
    backoff_max: float = 120.0
    docker_host: str | None = None
    # Where job containers run (README "Swarm"): one Engine, or a Swarm's services.
    backend: str = "local"
    # Swarm placement: a job's `pool:` names one of these; its constraints are the operator's.
    pools: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Swarm: a job's sockets on the node its task runs on (README "Swarm", relays).
    relay: RelaySettings = field(default_factory=RelaySettings)
    # Job containers, hardened by default (see README "Security model"). A job has no
    # network of its own: its model through the gateway, and the egress allowlists it picks.
    # network_mode is the network of a job that asks for `network: open`, where allowed.
    network_mode: str = "bridge"
    allow_open_network: bool = False
    allow_host_network: bool = False  # network_mode host is refused without it
    # The model gateway (README "Security model"): a job's tokens (input + output) are
    # capped at its token_budget (0: no cap); provider-side tools that reach the network
    # (hosted web search, URL fetch, remote MCP) only for jobs that ask, where allowed.
    token_budget: int = 0
    allow_network_tools: bool = False
    gateway_max_body: int = 64 * 1024**2
    # Named egress allowlists a job may pick (`network: [pypi]`), reached through the
    # daemon's CONNECT proxy; egress_hosts pins names to addresses (checked all the same).
    egress: Mapping[str, Allowlist] = field(default_factory=dict)
    egress_hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    memory_limit: int = 4 * 1024**3
    cpus: float = 2.0
    pids_limit: int = 512
    job_user: str | None = None  # "uid:gid"; None: the owner of the work root
    # Codex auth (README "Security model"): "login" uses ChatGPT-login dirs, kept by the
    # daemon and shared by its jobs; "api_key" the key in api_key_file; "none" neither.
    auth_mode: str = "login"
    auth_dirs: tuple[Path, ...] = ()
    api_key_file: Path | None = None
    allowed_repos: tuple[str, ...] = ("*",)
    allowed_protocols: tuple[str, ...] = DEFAULT_PROTOCOLS
    log_format: str = "text"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Per-job bounds and results (README "Workspaces and results").
    disk_budget: int = 10 * 1024**3  # workspace + out/<id> + agent home; a job may ask for less
    # How the budget holds (README "Running jobs"): "auto", a filesystem of its size per job
    # where the host allows it, else polled; "require", never polled; "poll", always.
    disk_bound: str = "auto"
    log_max_size: int = 10 * 1024**2  # the container's own log, kept by Docker
    stop_grace: float = 30.0  # after a timeout: SIGTERM, time to save the agent's work, SIGKILL
    git_author: str = "watcherd <watcherd@localhost>"  # commits the worker makes for the agent
    keep_workspaces: int = 20  # finished jobs' workspaces kept for inspection, newest first
    workspace_retention: float = 24 * 3600.0  # ... and for at most this long
    fetch_timeout: float = 600.0  # one update of a repository cache
    min_free_disk: int = 256 * 1024**2  # below this free on the root, nothing is claimed
    # `watcherd mcp` (README "Using watcherd from another agent"); the daemon ignores it.
    mcp: McpSettings = field(default_factory=McpSettings)
    # Where to tell that a job ended (README "Notifications"): named webhooks and commands,
    # those for every job, and a job's own choice among the names (its notify:).
    notify: Mapping[str, NotifyTarget] = field(default_factory=dict)
    notify_default: tuple[str, ...] = ()
    # Agents (README "Agents"): the one a job gets when it names none, and per-agent
    # settings; Codex's are the top-level image/auth_* keys above.
    default_agent: str = "codex"
    agents: Mapping[str, AgentSettings] = field(default_factory=dict)
    # `watcherd serve` (README "HTTP API and dashboard"): where it listens, its tokens.
    serve: ServeSettings = field(default_factory=ServeSettings)
    # Jobs that start themselves (README "Schedules and hooks"): the operator's schedules,
    # none firing more often than schedule_min_interval, and named signed inbound hooks.
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    schedule_min_interval: float = 60.0
    hooks: Mapping[str, Hook] = field(default_factory=dict)
    # Publishing a job's branch and opening its pull request (README "Publishing"): the
    # forges and their credential files, per-repository defaults, bounds on what is pushed.
    publish: PublishSettings = field(default_factory=PublishSettings)

    @property
    def bot_auth_dir(self) -> Path:
        return self.root / ".codex-bot"

    @property
    def git_identity(self) -> tuple[str, str]:
        """(name, email) from ``git_author``, ``Name <email>``."""
        name, _, email = self.git_author.partition("<")
        return name.strip(), email.rstrip().removesuffix(">").strip()

    @property
    def effective_auth_dirs(self) -> tuple[Path, ...]:
        return self.auth_dirs or (self.bot_auth_dir,)

    def login_dirs(self, agent: str) -> tuple[Path, ...]:
        """The refreshable-login dirs an agent's jobs use: Codex's in login mode (the
        ``auth_*`` keys are its settings); no other agent has a login mode yet."""
        if agent == "codex" and self.auth_mode == "login":
            return self.effective_auth_dirs
        return ()

    @property
    def prepare_depth(self) -> int:
        """How many jobs may wait prepared for a slot."""
        return self.concurrency if self.prepare_ahead is None else self.prepare_ahead

    def agent_settings(self, agent: str) -> AgentSettings:
        """An agent's settings, Codex's from the top-level keys."""
        settings = self.agents.get(agent, AgentSettings())
        if agent != "codex":
            config_dir = settings.config_dir or self.root / f".{agent}-bot"
            return dataclasses.replace(settings, config_dir=config_dir)
        return AgentSettings(
            image=settings.image or self.image,
            api_key_file=self.api_key_file if self.auth_mode == "api_key" else None,
            config_dir=settings.config_dir or self.bot_auth_dir,
            env=settings.env,
        )

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


_ENV_OVERRIDES = {
    "WATCHERD_ROOT": "root",
    "WATCHERD_IMAGE": "image",
    "WATCHERD_CONCURRENCY": "concurrency",
    "WATCHERD_DOCKER_HOST": "docker_host",
    "WATCHERD_BACKEND": "backend",
    "WATCHERD_NETWORK_MODE": "network_mode",
    "WATCHERD_API_KEY_FILE": "api_key_file",
    "WATCHERD_AUTH_MODE": "auth_mode",
}


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] = os.environ,
    **overrides: Any,
) -> Config:
    """File (explicit path, else /etc/watcherd/config.yaml when present), then WATCHERD_*
    variables, then explicit overrides (command-line flags); later wins."""
    raw: dict[str, Any] = {}
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        raw.update(_read_file(path))
    for variable, key in _ENV_OVERRIDES.items():
        if environ.get(variable):
            raw[key] = environ[variable]
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return _build(raw, source=str(path) if path else "defaults")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from exc
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


_FIELDS = {f.name for f in dataclasses.fields(Config)}


def _build(raw: dict[str, Any], source: str) -> Config:
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            values[key] = _CONVERTERS.get(key, _as_str)(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: setting {key!r}: {exc}") from exc
    config = Config(**values)
    _check(config, source)
    return config


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")  # an environment variable's spelling
    raise ValueError(f"expected true or false, got {value!r}")


def _as_pinned_hosts(value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of host names to lists of addresses")
    pinned = {}
    for name, addresses in value.items():
        listed = [addresses] if isinstance(addresses, str) else addresses
        if not isinstance(name, str) or not isinstance(listed, list) or not listed:
            raise ValueError(f"{name!r}: expected a name and a list of addresses")
        for address in listed:
            try:
                ipaddress.ip_address(address)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name}: {address!r} is not an IP address") from exc
        pinned[name.lower().rstrip(".")] = tuple(str(a) for a in listed)
    return pinned


def _as_path(value: Any) -> Path:
    return Path(_as_str(value)).expanduser()


def _as_int(value: Any) -> int:
    """A whole number, or a string of one (environment variables are strings). 2.7 and
    "2.7" are refused: truncating them would quietly run with a number nobody wrote."""
    if isinstance(value, bool):
        raise ValueError("expected a whole number, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)  # surrounding whitespace is fine, a decimal point is not
        except ValueError:
            pass
    raise ValueError(f"expected a whole number, got {value!r}")


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):  # NaN passes every comparison with a limit
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _as_size_or_zero(value: Any) -> int:
    return 0 if value in (0, "0") else parse_size(value)


def _as_str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def _as_path_tuple(value: Any) -> tuple[Path, ...]:
    return tuple(Path(v).expanduser() for v in _as_str_tuple(value))


def _as_pools(value: Any) -> dict[str, tuple[str, ...]]:
    """``{name: [constraint, ...]}``, constraints as Swarm writes them (node.labels.gpu==true)."""
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of pool names to lists of constraints")
    pools: dict[str, tuple[str, ...]] = {}
    for name, constraints in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
            raise ValueError(f"pool name {name!r}: letters, digits, '.', '_' and '-' only")
        pools[name] = _as_str_tuple(constraints)
        if not pools[name] or not all("==" in c or "!=" in c for c in pools[name]):
            raise ValueError(f"pool {name!r}: each constraint needs == or != (node.labels.x==y)")
    return pools


def _as_env(value: Any) -> dict[str, str]:
    # The same names are reserved as in a job's env: extra_env reaches every job container.
    return check_env(value, setter="the config")


_CONVERTERS: dict[str, Any] = {
    "root": _as_path,
    "image_dir": _as_path,
    "api_key_file": _as_path,
    "concurrency": _as_int,
    "prepare_ahead": lambda value: None if value is None else _as_int(value),
    "retries": _as_int,
    "max_retries": _as_int,
    "pids_limit": _as_int,
    "cpus": _as_float,
    "settle_seconds": _as_float,
    "rescan_seconds": parse_duration,
    "default_timeout": parse_duration,
    "max_timeout": parse_duration,
    "backoff_initial": parse_duration,
    "backoff_max": parse_duration,
    "memory_limit": parse_size,
    "disk_budget": parse_size,
    "log_max_size": parse_size,
    "stop_grace": parse_duration,
    "keep_workspaces": _as_int,
    "workspace_retention": parse_duration,
    "fetch_timeout": parse_duration,
    "min_free_disk": _as_size_or_zero,
    "auth_dirs": _as_path_tuple,
    "ca_certs": _as_path_tuple,
    "allowed_repos": _as_str_tuple,
    "allowed_protocols": _as_str_tuple,
    "extra_env": _as_env,
    "notify": parse_targets,
    "publish": parse_publish,
    "agents": parse_agent_settings,
    "serve": parse_serve_settings,
    "relay": parse_relay_settings,
    "notify_default": _as_str_tuple,
    "pools": _as_pools,
    "allow_open_network": _as_bool,
    "allow_host_network": _as_bool,
    "allow_network_tools": _as_bool,
    "token_budget": _as_int,
    "gateway_max_body": parse_size,
    "egress": parse_allowlists,
    "egress_hosts": _as_pinned_hosts,
    "schedules": parse_schedules,
    "schedule_min_interval": parse_duration,
    "hooks": parse_hooks,
    "mcp": parse_mcp_settings,
}


def _check(config: Config, source: str) -> None:
    problems = _range_problems(config)
    if config.network_mode not in NETWORK_MODES:
        problems.append(f"network_mode must be one of {', '.join(NETWORK_MODES)}")
    if config.backend not in BACKENDS:
        problems.append(f"backend must be one of {', '.join(BACKENDS)}, got {config.backend!r}")
    if config.network_mode == "host" and not config.allow_host_network:
        problems.append("network_mode host shares the host's network (its loopback "
                        "included) with jobs: set allow_host_network: true to mean it")  # fmt: skip
    if config.relay.listen is not None and config.backend != "swarm":
        problems.append("relay.listen serves Swarm tasks on other nodes: it needs backend: swarm")
    if config.token_budget < 0:
        problems.append(f"token_budget must not be negative, got {config.token_budget}")
    if config.default_agent not in AGENTS:
        problems.append(f"default_agent must be one of {', '.join(sorted(AGENTS))}")
    if config.disk_bound not in DISK_BOUNDS:
        problems.append(f"disk_bound must be one of {', '.join(DISK_BOUNDS)}, "
                        f"got {config.disk_bound!r}")  # fmt: skip
    if config.auth_mode not in AUTH_MODES:
        problems.append(f"auth_mode must be one of {', '.join(AUTH_MODES)}")
    if config.auth_mode == "api_key" and config.api_key_file is None:
        problems.append("auth_mode api_key needs api_key_file")
    if config.log_format not in ("text", "json"):
        problems.append("log_format must be text or json")
    if not _GIT_AUTHOR.match(config.git_author):
        problems.append("git_author must look like 'Name <email>'")
    if config.keep_workspaces < 0:
        problems.append("keep_workspaces must not be negative")
    if config.job_user is not None and not _is_uid_gid(config.job_user):
        problems.append("job_user must be 'uid:gid' with numbers")
    refused = sorted(set(config.allowed_protocols) - set(KNOWN_PROTOCOLS))
    if refused:
        problems.append(
            f"allowed_protocols: {', '.join(refused)} not allowed (choose from "
            f"{', '.join(KNOWN_PROTOCOLS)})"
        )
    unknown_targets = [name for name in config.notify_default if name not in config.notify]
    if unknown_targets:
        problems.append(
            f"notify_default: no target named {', '.join(map(repr, unknown_targets))} under "
            f"notify (configured: {', '.join(config.notify) or 'none'})"
        )
    problems += schedule_problems(config.schedules, config.schedule_min_interval)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def _range_problems(config: Config) -> list[str]:
    """Every number within its range, each problem naming its key. The converters already
    made the durations (rescan_seconds, backoff_*, *_timeout) more than zero."""
    problems = []
    if config.concurrency < 1:
        problems.append(f"concurrency must be at least 1, got {config.concurrency}")
    if config.prepare_ahead is not None and config.prepare_ahead < 0:
        problems.append(f"prepare_ahead must not be negative, got {config.prepare_ahead}")
    if config.pids_limit < MIN_PIDS_LIMIT:
        problems.append(f"pids_limit must be at least {MIN_PIDS_LIMIT}, got {config.pids_limit}")
    if config.cpus < MIN_CPUS:
        problems.append(f"cpus must be at least {MIN_CPUS}, got {config.cpus:g}")
    if config.memory_limit < MIN_MEMORY_LIMIT:
        problems.append(
            f"memory_limit must be at least 64m ({MIN_MEMORY_LIMIT} bytes), "
            f"got {config.memory_limit} bytes"
        )
    if config.settle_seconds < 0:
        problems.append(f"settle_seconds must not be negative, got {config.settle_seconds:g}")
    if config.disk_budget < MIN_DISK_BUDGET:
        problems.append(f"disk_budget must be at least 16m, got {config.disk_budget} bytes")
    if config.log_max_size < MIN_LOG_MAX_SIZE:
        problems.append(f"log_max_size must be at least 64k, got {config.log_max_size} bytes")
    if config.max_retries < 0:
        problems.append(f"max_retries must not be negative, got {config.max_retries}")
    elif not 0 <= config.retries <= config.max_retries:
        problems.append(
            f"retries must be between 0 and max_retries ({config.max_retries}), "
            f"got {config.retries}"
        )
    if config.backoff_initial > config.backoff_max:
        problems.append(
            f"backoff_initial ({config.backoff_initial:g}s) must not be more than "
            f"backoff_max ({config.backoff_max:g}s)"
        )
    if config.default_timeout > config.max_timeout:
        problems.append(
            f"default_timeout ({config.default_timeout:g}s) must not be more than "
            f"max_timeout ({config.max_timeout:g}s)"
        )
    return problems


_GIT_AUTHOR = re.compile(r"^[^<>\n]+ <[^<>\s]+>$")


def _is_uid_gid(value: str) -> bool:
    uid, _, gid = value.partition(":")
    return uid.isdigit() and gid.isdigit()
