"""Anthropic's Claude Code (`claude -p --output-format stream-json --verbose`).

The description watcherd needs to run it (image, home, credentials, the environment that
keeps it offline, where its sessions live) and ``read_events``, which turns its event
stream (out/<id>/events.jsonl) into the common record. Data and pure functions only.

The stream, as Claude Code 2.1.332 writes it (one JSON object a line):

- ``{"type": "system", "subtype": "init", "session_id": ..., "model": ...}`` first;
- ``{"type": "assistant", "message": {...}}`` for each content block the model sends
  (a text, a tool_use; several events can share one message id), and ``{"type": "user",
  ...}`` with the tool results. A failed API call comes as an assistant message of model
  ``<synthetic>`` with ``is_api_error_message: true`` and the error as its text; a call
  that will be tried again, as ``{"type": "system", "subtype": "api_retry", "attempt": n,
  "max_retries": 10, "error_status": 401, "error": "authentication_failed"}`` (with a
  backoff that grows to some 40 s: a wrong key takes minutes to fail);
- ``{"type": "result", "subtype": "success" | "error_max_turns" | ..., "is_error": bool,
  "result": the final text, "errors": [...], "usage": {...}, "total_cost_usd": ...}``
  last, with the usage of the whole run.
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

VERSION = "2.1.332"
NAME = "claude"
IMAGE = f"watcherd-claude:{VERSION}"

# The agent home: a fresh folder per job, mounted here; CLAUDE_CONFIG_DIR points Claude
# Code at it (its .claude.json, settings.json and projects/ live there, not in $HOME).
HOME = "/home/codex/.claude"
HOME_ENV = "CLAUDE_CONFIG_DIR"

# An API key (x-api-key) or a subscription's long-lived token (`claude setup-token`).
KEY_ENV = "ANTHROPIC_API_KEY"
CREDENTIAL_ENVS = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")

# The operator's files copied into every job's home (from their Claude config dir): user
# settings (env, permissions, model, apiKeyHelper ...) and user instructions, both read
# from CLAUDE_CONFIG_DIR.
CONFIG_FILES = ("settings.json", "CLAUDE.md")

# Nothing calls home. CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC alone stops every request
# that is not to the Messages API in 2.1.332 (telemetry, error reports, feature flags,
# the update check); the others name each kind, in case a later version splits them.
# The run hook sets the same.
FIXED_ENV: Mapping[str, str] = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "DISABLE_INSTALLATION_CHECKS": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
}

# A session is the transcript projects/<cwd as a name>/<session id>.jsonl (and, when the
# session kept large tool outputs or ran subagents, the folder of the same name beside it:
# tool-results/, subagents/). projects/<cwd>/memory/ is Claude Code's memory of the
# project, which comes along. `--resume <id>` needs nothing else from the home (2.1.332
# finds the transcript under another cwd's folder too; jobs all run in /work/repo).
SESSION_FILES = ("projects",)
WORKDIR = "/work/repo"

# Job keys it understands beyond the common ones.
SUPPORTS = frozenset({MODEL, MAX_TURNS, RESUME})

MESSAGE_LIMIT = 1 << 20  # characters kept of a final message or an error


def project_folder(cwd: str = WORKDIR) -> str:
    """The folder under projects/ that holds the sessions started in ``cwd``
    (Claude Code writes every character but ASCII letters and digits as "-")."""
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


def session_paths(session_id: str, cwd: str = WORKDIR) -> tuple[str, str]:
    """The transcript of a session and its folder, relative to the agent home."""
    base = f"projects/{project_folder(cwd)}/{session_id}"
    return f"{base}.jsonl", base


_SESSION_ID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def read_events(lines: Iterable[str]) -> AgentReport:
    """The session (from the init event), the usage and final message (from the last
    result event), the error (from a failed result, else from an API error message)."""
    session: str | None = None
    result: dict[str, Any] | None = None
    text: str | None = None  # the last text the model sent, for a run cut before its result
    api_error: str | None = None
    # Without a result event: each message's usage (the events of one message repeat it).
    message_usage: dict[str, tuple[int, int]] = {}
    for event in json_events(lines):
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "init":
            found = event.get("session_id")
            if isinstance(found, str) and _SESSION_ID.fullmatch(found):
                session = session or found
        elif kind == "system" and event.get("subtype") == "api_retry":
            api_error = _retrying(event)
        elif kind == "assistant" and isinstance(event.get("message"), dict):
            message = event["message"]
            said = _text(message.get("content"))
            if event.get("is_api_error_message") is True or message.get("model") == "<synthetic>":
                api_error = said or api_error
                continue
            text = said or text
            api_error = None  # the model answered after all
            if isinstance(message.get("id"), str) and isinstance(message.get("usage"), dict):
                message_usage[message["id"]] = _tokens(message["usage"])
        elif kind == "result":
            result = event
    if session is None and result is not None:
        found = result.get("session_id")
        if isinstance(found, str) and _SESSION_ID.fullmatch(found):
            session = found

    if result is None:
        usage = None
        if message_usage:
            usage = Usage(
                sum(i for i, _ in message_usage.values()),
                sum(o for _, o in message_usage.values()),
            )
        return AgentReport(session, usage, _cut(text), _cut(api_error))

    usage = Usage(*_tokens(result.get("usage")), cost_usd=_cost(result.get("total_cost_usd")))
    if result.get("is_error") is True:
        errors = [str(e) for e in result.get("errors") or [] if isinstance(e, str) and e]
        reason = "; ".join(errors) or _string(result.get("result")) or api_error
        subtype = _string(result.get("subtype"))
        if not reason:
            reason = subtype if subtype and subtype != "success" else "Claude Code failed"
        return AgentReport(session, usage, None, _cut(reason))
    return AgentReport(session, usage, _cut(_string(result.get("result")) or text), None)


def _retrying(event: dict[str, Any]) -> str:
    """A run cut while Claude Code retried a call: what the API kept answering."""
    what = _string(event.get("error")) or "an API error"
    status = reported_count(event.get("error_status"))
    attempt, most = reported_count(event.get("attempt")), reported_count(event.get("max_retries"))
    return f"{what}{f' (HTTP {status})' if status else ''}, retry {attempt} of {most}"


def _tokens(usage: Any) -> tuple[int, int]:
    """(input, output): input counts the prompt tokens written to and read from the cache
    too (Anthropic reports them apart; together they are what the model read)."""
    if not isinstance(usage, dict):
        return 0, 0
    read = sum(
        reported_count(usage.get(name))
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return read, reported_count(usage.get("output_tokens"))


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content or None
    if not isinstance(content, list):
        return None
    texts = [
        part["text"]
        for part in content
        if isinstance(part, dict) and part.get("type") == "text"
        if isinstance(part.get("text"), str)
    ]
    return "".join(texts) or None


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _cut(text: str | None) -> str | None:
    return text if text is None or len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT]


def _cost(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    cost = float(value)
    return cost if cost >= 0 and cost == cost and cost != float("inf") else None


ANTHROPIC_API = "https://api.anthropic.com"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
# In the operator's settings.json: what would send the model, or a key, elsewhere.
_SETTINGS_DROPPED = ("apiKeyHelper", "awsAuthRefresh", "awsCredentialExport")
_ENV_DROPPED = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
                "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "ANTHROPIC_BEDROCK_BASE_URL",
                "ANTHROPIC_VERTEX_BASE_URL", "HTTPS_PROXY", "HTTP_PROXY")  # fmt: skip


def wire(setup: ModelSetup, route: Route, token: str) -> Wiring:
    """Claude Code's Messages API through the gateway: ANTHROPIC_BASE_URL, in the variable
    and in the job's copy of the operator's settings.json (whose ``env`` wins over the
    process's), and the token in its key's variable. The upstream is the operator's: the
    settings' ANTHROPIC_BASE_URL, else agents.claude.env's, else Anthropic's API. A key in
    the settings (or an apiKeyHelper command) never reaches the job."""
    settings = json_object(setup.files.get("settings.json"))
    found = settings.get("env")
    env: dict[str, Any] = found if isinstance(found, dict) else {}
    base = env.get(BASE_URL_ENV) or setup.env.get(BASE_URL_ENV) or ANTHROPIC_API
    key_name, key = setup.api_key or (KEY_ENV, None)
    if key is None:
        key = operator_key(setup, env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_AUTH_TOKEN"))
    url = route("anthropic", str(base), key)
    files = {}
    if settings:
        for name in _SETTINGS_DROPPED:
            settings.pop(name, None)
        settings["env"] = {k: v for k, v in env.items() if k not in _ENV_DROPPED}
        settings["env"][BASE_URL_ENV] = url
        files["settings.json"] = json.dumps(settings, indent=2).encode()
    return Wiring(env={BASE_URL_ENV: url, key_name: token}, files=files)


CLAUDE = AgentProfile(
    name=NAME,
    image=IMAGE,
    home=HOME,
    home_env=HOME_ENV,
    key_envs=CREDENTIAL_ENVS,
    read_events=read_events,
    config_files=CONFIG_FILES,
    session_files=SESSION_FILES,
    fixed_env=FIXED_ENV,
    supports=SUPPORTS,
    wire=wire,
    allowed_flags=frozenset(
        {
            "--model",
            "--fallback-model",
            "--max-turns",
            "--append-system-prompt",
            "--system-prompt",
            "--allowedTools",
            "--allowed-tools",
            "--disallowedTools",
            "--disallowed-tools",
        }
    ),
)
