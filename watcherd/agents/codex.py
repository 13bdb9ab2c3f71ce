"""OpenAI's Codex CLI (`codex exec --json`)."""

from __future__ import annotations

import base64
import json
import tomllib
from collections.abc import Iterable
from typing import Any

from watcherd.agents.base import (
    MODEL,
    RESUME,
    REVIEW,
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

VERSION = "0.171.0"


def read_events(lines: Iterable[str]) -> AgentReport:
    """thread.started (the session), turn.completed (usage, summed over turns),
    item.completed agent_message (the last message), turn.failed / error."""
    session = message = error = None
    tokens_in = tokens_out = 0
    turns = 0
    for event in json_events(lines):
        kind = event.get("type")
        if kind == "thread.started" and isinstance(event.get("thread_id"), str):
            session = session or event["thread_id"]
        elif kind == "turn.completed" and isinstance(event.get("usage"), dict):
            turns += 1
            tokens_in += reported_count(event["usage"].get("input_tokens"))
            tokens_out += reported_count(event["usage"].get("output_tokens"))
        elif kind == "item.completed" and isinstance(event.get("item"), dict):
            item = event["item"]
            if item.get("type") == "agent_message" and isinstance(item.get("text"), str):
                message = item["text"]
        elif kind in ("turn.failed", "error"):
            found = event.get("message") or (event.get("error") or {}).get("message")
            error = str(found) if found else error
    usage = Usage(tokens_in, tokens_out) if turns else None
    return AgentReport(session_id=session, usage=usage, last_message=message, error=error)


def login_refresh_problem(new: bytes, old: bytes | None) -> str:
    """Why ``new`` is not a refresh of the ChatGPT login ``old``; empty if it is one.
    Only a login that names its account can be refreshed: an API-key login (no account)
    or a different account is never taken back."""
    record = _json(new)
    tokens = record.get("tokens") if isinstance(record, dict) else None
    if not isinstance(tokens, dict):
        return "no tokens"
    for name in ("access_token", "refresh_token"):
        if not isinstance(tokens.get(name), str) or not tokens[name]:
            return f"tokens.{name} missing"
    previous = _identity(_json(old) if old is not None else None)
    if previous is None:
        return "the login had no account to refresh"
    if _identity(record) != previous:
        return "a different account"
    return ""


def _identity(record: Any) -> tuple[str, str | None] | None:
    """(account id, the id token's subject) of a ChatGPT login, None without an account."""
    tokens = record.get("tokens") if isinstance(record, dict) else None
    if not isinstance(tokens, dict):
        return None
    account = tokens.get("account_id")
    if not isinstance(account, str) or not account:
        return None
    return account, _token_subject(tokens.get("id_token"))


def _token_subject(token: Any) -> str | None:
    """The ``sub`` claim of a JWT, unverified: only compared with the one before."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    claims = _json(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    subject = claims.get("sub") if isinstance(claims, dict) else None
    return subject if isinstance(subject, str) else None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


OPENAI_API = "https://api.openai.com/v1"
CHATGPT_BACKEND = "https://chatgpt.com/backend-api/codex"
CHATGPT_TOKEN_URL = "https://auth.openai.com/oauth/token"
TOKEN_ENV = "WATCHERD_MODEL_TOKEN"


def wire(setup: ModelSetup, route: Route, token: str) -> Wiring:
    """Codex is given a provider of watcherd's own (``-c`` overrides, which win over every
    config file, a repository's .codex/config.toml included), whose base URL is the gateway
    and whose key variable holds the job's token. Its upstream is what the operator set up:
    the provider their config.toml selects, else OPENAI_BASE_URL, else OpenAI's API, or with
    a ChatGPT login the ChatGPT backend (the login's own token goes through the gateway)."""
    config = _toml(setup.files.get("config.toml"))
    selected = config.get("model_provider", "openai")
    providers = config.get("model_providers")
    provider = providers.get(selected) if isinstance(providers, dict) else None
    overrides = {"model_provider": '"watcherd"', "model_providers.watcherd.name": '"watcherd"',
                 "model_providers.watcherd.supports_websockets": "false",
                 "web_search": '"disabled"'}  # fmt: skip
    env = {}
    own_login = False  # a ChatGPT login: Codex sends its own token, the gateway adds none
    if isinstance(provider, dict) and isinstance(provider.get("base_url"), str):
        api = "openai-chat" if provider.get("wire_api") == "chat" else "openai-responses"
        env_key = provider.get("env_key")
        key = operator_key(setup, env_key if isinstance(env_key, str) else None)
        url = route(api, provider["base_url"], key)
        overrides["model_providers.watcherd.wire_api"] = '"chat"' if api == "openai-chat" else (
            '"responses"')  # fmt: skip
        for name in _PROVIDER_KEPT:  # how the operator's provider retries, waits and asks
            if name in provider and (value := _toml_value(provider[name])) is not None:
                overrides[f"model_providers.watcherd.{name}"] = value
    elif setup.login and setup.api_key is None:
        url = route("openai-responses", CHATGPT_BACKEND, None)
        own_login = True
        overrides["model_providers.watcherd.requires_openai_auth"] = "true"
        env["CODEX_REFRESH_TOKEN_URL_OVERRIDE"] = route("openai-oauth", CHATGPT_TOKEN_URL, None)
    else:
        base = setup.env.get("OPENAI_BASE_URL") or OPENAI_API
        url = route("openai-responses", base, operator_key(setup, None))
    if not own_login:
        overrides["model_providers.watcherd.env_key"] = f'"{TOKEN_ENV}"'
        env[TOKEN_ENV] = token
    overrides["model_providers.watcherd.base_url"] = json.dumps(url)
    env["WATCHERD_CODEX_CONFIG"] = "\n".join(f"{k}={v}" for k, v in overrides.items())
    return Wiring(env=env)


# What of the operator's provider carries over to watcherd's: never its URL, key, headers
# (they can hold a credential) or auth.
_PROVIDER_KEPT = ("request_max_retries", "stream_max_retries", "stream_idle_timeout_ms",
                  "query_params")  # fmt: skip


def _toml_value(value: Any) -> str | None:
    """A TOML value for ``-c``: numbers, strings, and tables of strings (query_params)."""
    if isinstance(value, bool) or not isinstance(value, int | str | dict):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    return "{" + ", ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in value.items()) + "}"


def _toml(data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {}
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


CODEX = AgentProfile(
    name="codex",
    image=f"watcherd-codex:{VERSION}",
    home="/home/codex/.codex",
    home_env="CODEX_HOME",
    key_envs=("CODEX_API_KEY",),
    read_events=read_events,
    config_files=("config.toml", "AGENTS.md"),
    login_file="auth.json",
    check_login=login_refresh_problem,
    # Rollouts, and the thread index Codex looks a resumed session up in.
    session_files=("sessions", "state_*.sqlite", "state_*.sqlite-wal", "state_*.sqlite-shm"),
    supports=frozenset({MODEL, RESUME, REVIEW}),
    wire=wire,
    allowed_flags=frozenset({"-m", "--model", "-i", "--image", "--output-schema"}),
)
