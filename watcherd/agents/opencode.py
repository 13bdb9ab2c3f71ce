"""OpenCode (https://opencode.ai) as a watcherd agent: what the daemon needs to know to run
it in its image, and how to read what it leaves in ``out/<id>/events.jsonl``.

The image (image/opencode/) holds the native ``opencode`` binary of the npm package
``opencode-linux-x64`` (the platform package of ``opencode-ai``), its run hook
``/usr/local/lib/watcherd/agent`` and ``/etc/opencode/opencode.json``, the settings no job
may change. The hook runs ``opencode run --format json --auto`` with the prompt on its
standard input and writes OpenCode's own JSON events, one per line:

- ``step_start``, ``step_finish`` (``part.tokens``: ``input`` without cached tokens,
  ``output`` without reasoning, ``reasoning``, ``cache.read``, ``cache.write``;
  ``part.cost`` in USD from the model's price list, 0 when it has none);
- ``text`` (``part.text``, ``part.messageID``): a finished text part of a message;
- ``tool_use`` (``part.tool``, ``part.state``: input, output, status, metadata.exit);
- ``reasoning`` (only with ``--thinking``);
- ``error`` (``error.name``, ``error.data.message``): the session failed; OpenCode then
  exits with 1.

Every event carries ``sessionID`` (``ses_...``), the id to resume with. Only the main
session's events are written: the tokens of subagents (the task tool) are not in them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from watcherd.agents.base import (
    MAX_TURNS,
    MODEL,
    RESUME,
    AgentProfile,
    AgentReport,
    ModelSetup,
    Route,
    Usage,
    Wiring,
    json_events,
    json_object,
    operator_key,
    reported_count,
)

NAME = "opencode"
VERSION = "1.18.33"
IMAGE = f"watcherd-{NAME}:{VERSION}"

# The job's OpenCode home: a fresh folder per job, mounted here. The hook points OpenCode's
# four XDG folders into it (config/, data/, cache/, state/ below it).
HOME = "/home/codex/.opencode-home"
HOME_ENV = "WATCHERD_AGENT_HOME"
# The operator's config, copied into the home (paths relative to it). Project config (the
# repository's opencode.json and .opencode/) is off; its AGENTS.md is read all the same.
CONFIG_FILES = (
    "config/opencode/opencode.json",
    "config/opencode/opencode.jsonc",
    "config/opencode/AGENTS.md",
)
# A finished job's sessions, to copy into a later job's home for AGENT_RESUME. OpenCode keeps
# them in SQLite in WAL mode and does not checkpoint at exit: most of the data is in the
# -wal file, which must travel with the database (the -shm index is rebuilt from it).
SESSION_FILES = (
    "data/opencode/opencode.db",
    "data/opencode/opencode.db-wal",
)
# Providers' keys OpenCode reads from the environment (models.dev's names); a provider of
# the operator's config names its own with "{env:NAME}". Commands the agent runs see every
# variable named like a secret emptied (the image's shell.env plugin).
CREDENTIAL_ENV = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENERATIVE_AI_API_KEY",
    "OPENROUTER_API_KEY",
    "OPENCODE_API_KEY",
)
# Offline and quiet; the hook sets these too, whatever the job's environment says.
FIXED_ENV: Mapping[str, str] = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",  # no version check against npm/GitHub
    "OPENCODE_DISABLE_MODELS_FETCH": "1",  # the built-in models.dev snapshot, no fetch
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",  # built-in auth plugins, installed from npm
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",  # language servers only if already installed
    "OPENCODE_DISABLE_SHARE": "1",  # no session sharing (opncd.ai)
    "OPENCODE_DISABLE_PROJECT_CONFIG": "1",  # no npm plugins or providers from the repo
}

SESSION_ID = re.compile(r"ses_[A-Za-z0-9]{1,128}")


def read_events(lines: Iterable[str]) -> AgentReport:
    """What an OpenCode run did, from its events.jsonl: the session (to resume), the tokens
    of all its steps (input with cached tokens, output with reasoning) and their cost, the
    text of its last message, and its failure. Lines that are not events are skipped."""
    session_id: str | None = None
    input_tokens = output_tokens = 0
    cost: float | None = None
    steps = 0
    texts: list[tuple[str, str]] = []  # (messageID, text), in order
    error: str | None = None
    for event in json_events(lines):
        if session_id is None:
            sid = event.get("sessionID")
            if isinstance(sid, str) and SESSION_ID.fullmatch(sid):
                session_id = sid
        kind = event.get("type")
        part = event.get("part")
        part = part if isinstance(part, dict) else {}
        if kind == "step_finish":
            steps += 1
            tokens = _dict(part.get("tokens"))
            cache = _dict(tokens.get("cache"))
            input_tokens += sum(
                reported_count(v)
                for v in (tokens.get("input"), cache.get("read"), cache.get("write"))
            )
            output_tokens += reported_count(tokens.get("output")) + reported_count(
                tokens.get("reasoning")
            )
            spent = part.get("cost")
            if isinstance(spent, int | float) and not isinstance(spent, bool) and spent >= 0:
                cost = (cost or 0.0) + float(spent)
        elif kind == "text":
            text, message = part.get("text"), part.get("messageID")
            if isinstance(text, str) and isinstance(message, str):
                texts.append((message, text))
        elif kind == "error":
            error = _error_text(event.get("error")) or error
    usage = Usage(input_tokens, output_tokens, cost) if steps else None
    return AgentReport(session_id, usage, _last_message(texts), error)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _last_message(texts: list[tuple[str, str]]) -> str | None:
    """The text parts of the last message that has any, joined as the hook joins them."""
    if not texts:
        return None
    last = texts[-1][0]
    return "\n\n".join(text for message, text in texts if message == last)


def _error_text(error: Any) -> str | None:
    """OpenCode's own words for a failure: the error's message, else its name."""
    if not isinstance(error, dict):
        return error if isinstance(error, str) and error else None
    data = _dict(error.get("data"))
    for value in (data.get("message"), error.get("message"), error.get("name")):
        if isinstance(value, str) and value.strip():
            return value
    return None


TOKEN_ENV = "WATCHERD_MODEL_TOKEN"
_API_BY_PACKAGE = {"@ai-sdk/anthropic": "anthropic", "@ai-sdk/google": "gemini"}


def wire(setup: ModelSetup, route: Route, token: str) -> Wiring:
    """Every provider in the operator's opencode.json that names a ``baseURL`` is routed
    through the gateway (its key, ``options.apiKey`` literal or ``{env:NAME}``, stays with
    the gateway; the job's copy reads the token). A provider without one has no way out:
    the job cannot reach it. Project config is off in the image (a repository's own
    opencode.json is not read)."""
    files = {}
    for name in CONFIG_FILES:
        if not name.endswith((".json", ".jsonc")) or name not in setup.files:
            continue
        config = json_object(setup.files[name])
        providers = config.get("provider")
        if not isinstance(providers, dict):
            continue
        for provider in providers.values():
            options = provider.get("options") if isinstance(provider, dict) else None
            if not isinstance(options, dict) or not isinstance(options.get("baseURL"), str):
                continue
            api = _API_BY_PACKAGE.get(str(provider.get("npm")), "openai-chat")
            key = options.get("apiKey")
            options["baseURL"] = route(
                api, options["baseURL"], operator_key(setup, key if isinstance(key, str) else None)
            )
            options["apiKey"] = "{env:" + TOKEN_ENV + "}"  # fmt: skip
        files[name] = json.dumps(config, indent=2).encode()
    return Wiring(env={TOKEN_ENV: token}, files=files)


OPENCODE = AgentProfile(
    name=NAME,
    image=IMAGE,
    home=HOME,
    home_env=HOME_ENV,
    key_envs=CREDENTIAL_ENV,
    read_events=read_events,
    config_files=CONFIG_FILES,
    session_files=SESSION_FILES,
    fixed_env=FIXED_ENV,
    supports=frozenset({MODEL, MAX_TURNS, RESUME}),
    wire=wire,
    allowed_flags=frozenset({"-m", "--model", "--agent", "--variant"}),
)
