"""Google's Gemini CLI (`gemini --output-format stream-json`), run by image/gemini/agent.

What the daemon needs to know of it, as data, and ``read_events``, which turns its event
stream (out/<id>/events.jsonl) into the common record. Its stream-json events, one JSON
object a line:

- ``init``: ``session_id`` (a UUID: ``gemini --resume <id>`` takes it up again), ``model``
- ``message``: ``role`` ``user`` (the prompt) or ``assistant`` (``content``, in chunks
  marked ``delta``)
- ``tool_use`` (``tool_name``, ``tool_id``, ``parameters``), ``tool_result`` (``tool_id``,
  ``status``, ``output``, ``error``)
- ``error``: a warning or a non-fatal error (``severity``, ``message``)
- ``result``, last: ``status`` ``success`` or ``error`` (then ``error.type`` and
  ``error.message``), and ``stats`` with the whole run's ``input_tokens`` and
  ``output_tokens`` (Gemini reports no cost).
"""

from __future__ import annotations

from collections.abc import Iterable
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
    operator_key,
    reported_count,
)

NAME = "gemini"
VERSION = "0.61.0"  # @google/gemini-cli, pinned by image/gemini/package-lock.json
NODE_VERSION = "22.23.3"  # node-linux-<arch>, pinned in image/Dockerfile (gemini-fetch)
IMAGE = f"watcherd-gemini:{VERSION}"

# The per-job home: Gemini CLI's folder, ~/.gemini (settings.json, GEMINI.md, sessions).
HOME = "/home/codex/.gemini"
# Gemini CLI has no variable for that folder itself: GEMINI_CLI_HOME replaces the user's
# home directory, and Gemini uses $GEMINI_CLI_HOME/.gemini. So it points at HOME's parent
# (not at HOME, as CODEX_HOME does for Codex).
HOME_ENV = "GEMINI_CLI_HOME"
HOME_ENV_VALUE = "/home/codex"
KEY_ENV = "GEMINI_API_KEY"
# The operator's files copied into every job's home (user settings and global context).
CONFIG_FILES = ("settings.json", "GEMINI.md")
# The sessions, relative to HOME: tmp/<project>/chats/session-*.jsonl, with the project's
# name in projects.json and tmp/<project>/.project_root (the project is the work tree's
# path, /work/<repo_dir>, so a resuming job must use the same repo_dir).
SESSION_FILES = ("tmp", "projects.json")
# Off the network and fit for headless use; image/gemini/agent sets the same itself.
# Usage statistics, update checks and auth are in the image's system settings
# (/etc/gemini-cli/settings.json), which override the user's and the workspace's.
FIXED_ENV = {
    "GEMINI_CLI_TRUST_WORKSPACE": "true",
    "GEMINI_CLI_NO_RELAUNCH": "true",
    "GEMINI_CLI_SYSTEM_SETTINGS_PATH": "/etc/gemini-cli/settings.json",
    "GEMINI_TELEMETRY_ENABLED": "false",
    "NO_BROWSER": "true",
}
# Job keys it understands beyond the common ones (AGENT_MODEL, AGENT_MAX_TURNS,
# AGENT_RESUME in the hook); it has no review mode.
SUPPORTS = frozenset({MODEL, MAX_TURNS, RESUME})
# Variables a job's env must not set for this agent: they would send its requests (and
# the API key) elsewhere or change what it trusts.
RESERVED_ENV_PREFIXES = ("GEMINI_", "GOOGLE_", "NODE_")
RESERVED_ENV = frozenset(
    {"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"}
    | {"NO_PROXY", "no_proxy", "CODE_ASSIST_ENDPOINT"}
)


def read_events(lines: Iterable[str]) -> AgentReport:
    """init (the session), result (usage over the whole run, and the failure), the
    assistant's text after its last tool call (the final message)."""
    session = error = None
    usage: Usage | None = None
    message: list[str] = []
    last_error_event: str | None = None
    for event in json_events(lines):
        kind = event.get("type")
        if kind == "init" and isinstance(event.get("session_id"), str):
            session = session or event["session_id"]
        elif kind == "message" and event.get("role") == "assistant":
            if isinstance(event.get("content"), str):
                message.append(event["content"])
        elif kind == "tool_use":
            message = []
        elif kind == "error" and event.get("severity") == "error":
            if isinstance(event.get("message"), str) and event["message"]:
                last_error_event = event["message"]
        elif kind == "result":
            stats = event.get("stats")
            if isinstance(stats, dict):
                usage = Usage(
                    reported_count(stats.get("input_tokens")),
                    reported_count(stats.get("output_tokens")),
                )
            if event.get("status") == "error":
                error = _error_message(event.get("error")) or "the agent reported an error"
            else:
                error = None
    if error is None and usage is None:
        error = last_error_event  # no result: it stopped early
    text = "".join(message)
    return AgentReport(session_id=session, usage=usage, last_message=text or None, error=error)


def _error_message(error: Any) -> str | None:
    text = error.get("message") if isinstance(error, dict) else None
    return text if isinstance(text, str) and text else None


GEMINI_API = "https://generativelanguage.googleapis.com"
BASE_URL_ENV = "GOOGLE_GEMINI_BASE_URL"


def wire(setup: ModelSetup, route: Route, token: str) -> Wiring:
    """Gemini CLI's API through the gateway: its base URL variable (no settings file sets
    one) and the token in GEMINI_API_KEY. The upstream: agents.gemini.env's base URL, else
    Google's API."""
    base = setup.env.get(BASE_URL_ENV) or GEMINI_API
    url = route("gemini", base, operator_key(setup, None))
    return Wiring(env={BASE_URL_ENV: url, KEY_ENV: token})


GEMINI = AgentProfile(
    name=NAME,
    image=IMAGE,
    home=HOME,
    home_env=HOME_ENV,
    home_env_value=HOME_ENV_VALUE,
    key_envs=(KEY_ENV,),
    read_events=read_events,
    config_files=CONFIG_FILES,
    session_files=SESSION_FILES,
    fixed_env=FIXED_ENV,
    supports=SUPPORTS,
    wire=wire,
    allowed_flags=frozenset({"-m", "--model"}),
)
