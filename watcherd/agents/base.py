"""What watcherd knows of one coding agent: a small description, one per agent kind.

The daemon and the worker image do the same for every agent (workspace, outputs, exit
codes, branch); an AgentProfile says only what differs: its image, where its home is and
which variable points the agent at it, which of the operator's files reach that home,
which variable carries its API key, what keeps it off the network, which job keys it
understands, and how to read its event stream into the common record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None  # where the agent reports it


@dataclass(frozen=True)
class AgentReport:
    """What an agent's own event stream says about its run (the agent can write that
    stream, so this is its account, not the daemon's)."""

    session_id: str | None = None  # to resume it
    usage: Usage | None = None
    last_message: str | None = None
    error: str | None = None


EventReader = Callable[[Iterable[str]], AgentReport]


class LoginError(RuntimeError):
    """An agent's login could not be renewed; ``transient`` if worth another attempt."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


# -- the way to the model: every agent's calls go through the daemon's gateway ---------------


class Route(Protocol):
    """(the gateway API it speaks, the operator's base URL, the operator's key or None, and
    headers the gateway sets whatever the job sends) -> the base URL the job uses instead
    (the gateway, on the job's loopback)."""

    def __call__(
        self, api: str, url: str, key: str | None, headers: Mapping[str, str] | None = None
    ) -> str: ...


@dataclass(frozen=True)
class ModelSetup:
    """What the operator configured for an agent's model, as its wiring reads it."""

    files: Mapping[str, bytes]  # the operator's config files for it, by name
    env: Mapping[str, str]  # the operator's variables for it (extra_env, agents.<name>.env)
    api_key: tuple[str, str] | None = None  # (variable, key) from its api_key_file
    login: bool = False  # a refreshable login is in use (its file is in ``files``)


@dataclass(frozen=True)
class Wiring:
    """What the job is given: variables (base URLs, the token in the key's place) and its
    copies of config files rewritten to point at the gateway."""

    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, bytes] = field(default_factory=dict)


# (the setup, how to route an upstream through the gateway, the job's token) -> its wiring.
# It calls ``route`` once for each upstream the operator configured; an upstream not routed
# is not reachable from the job.
Wire = Callable[[ModelSetup, Route, str], Wiring]


def json_object(data: bytes | None) -> dict[str, Any]:
    """An operator's JSON (or JSONC: whole-line ``//`` comments) settings file as an
    object; {} when it is missing or not one."""
    text = (data or b"").decode("utf-8", "replace")
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    try:
        value = json.loads(text) if text.strip() else {}
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def operator_key(setup: ModelSetup, reference: str | None) -> str | None:
    """A key the operator's config refers to: ``{env:NAME}``/``$NAME``/a variable name in
    the operator's variables, or the agent's api_key_file; a literal otherwise."""
    if reference is None:
        return setup.api_key[1] if setup.api_key else None
    name = reference
    for prefix, suffix in (("{env:", "}"), ("${", "}"), ("$", "")):
        if reference.startswith(prefix) and reference.endswith(suffix):
            name = reference[len(prefix) : len(reference) - len(suffix)]
            break
    else:
        if not name.isidentifier():
            return reference  # a literal key in the operator's file
    if name in setup.env:
        return setup.env[name]
    if setup.api_key and setup.api_key[0] == name:
        return setup.api_key[1]
    return None


def json_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects among an event stream's lines. The agent can write that file: a
    line that is not JSON, or nested past the parser's depth, is skipped."""
    for line in lines:
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(event, dict):
            yield event


def reported_count(value: Any) -> int:
    """A count an agent reported: a whole number, not negative, not a boolean; else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# Job keys an agent may understand beyond the common ones.
MODEL = "model"
MAX_TURNS = "max_turns"
RESUME = "resume"
REVIEW = "review"  # mode: review


@dataclass(frozen=True)
class AgentProfile:
    name: str
    image: str  # default tag, `watcherd image build <name>` makes it
    home: str  # the agent's home in the container: a fresh folder per job
    home_env: str  # the variable that points the agent at it
    # The variables that carry a credential; an api_key_file line NAME=value picks one,
    # a bare key is the first.
    key_envs: tuple[str, ...]
    read_events: EventReader
    # The operator's files (from the agent's config dir) copied into every job's home.
    config_files: tuple[str, ...] = ()
    # A refreshable login the daemon keeps (its jobs share a login dir): the file in
    # the login dir, which no job sees (its wiring gives the job a stand-in), and how the
    # daemon renews it before a job: (the login dir, the operator's variables, the job's
    # timeout) -> whether it was renewed. Empty: no such login.
    login_file: str | None = None
    renew_login: Callable[[Path, Mapping[str, str], float], bool] | None = None
    # What in the home makes up the agent's sessions (globs): moved to out/<id>/sessions/
    # after the job, copied back into a resuming job's home.
    session_files: tuple[str, ...] = ("sessions",)
    fixed_env: Mapping[str, str] = field(default_factory=dict)  # offline, no telemetry
    supports: frozenset[str] = frozenset({MODEL})
    home_env_value: str | None = None  # what home_env holds, if not the home itself
    # Its model calls go to the gateway: how the operator's setup is turned into the job's.
    wire: Wire | None = None
    # The only job ``flags`` it takes (options, with their values following): none that
    # sets a provider, a base URL, a sandbox or approval mode, an MCP server or a settings
    # file. "--name" also admits "--name=value".
    allowed_flags: frozenset[str] = frozenset()
