"""OpenAI's Codex CLI (`codex exec --json`)."""

from __future__ import annotations

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
from watcherd.agents.codex_login import LOGIN_FILE, TOKEN_URL_ENV, read_login, renew, stand_in

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


OPENAI_API = "https://api.openai.com/v1"
CHATGPT_BACKEND = "https://chatgpt.com/backend-api/codex"
TOKEN_ENV = "WATCHERD_MODEL_TOKEN"


def wire(setup: ModelSetup, route: Route, token: str) -> Wiring:
    """Codex is given a provider of watcherd's own (``-c`` overrides, which win over every
    config file, a repository's .codex/config.toml included), whose base URL is the gateway
    and whose key variable holds the job's token. Its upstream is what the operator set up:
    the provider their config.toml selects, else OPENAI_BASE_URL, else OpenAI's API, or with
    a ChatGPT login the ChatGPT backend. A login's key or token stays in the gateway too: the
    job's home gets a stand-in login (codex_login) whose token is the job's."""
    config = _toml(setup.files.get("config.toml"))
    selected = config.get("model_provider", "openai")
    providers = config.get("model_providers")
    provider = providers.get(selected) if isinstance(providers, dict) else None
    overrides = {"model_provider": '"watcherd"', "model_providers.watcherd.name": '"watcherd"',
                 "model_providers.watcherd.supports_websockets": "false",
                 "web_search": '"disabled"'}  # fmt: skip
    env, files = {}, {}
    own_login = False  # a ChatGPT login: Codex sends its stand-in's token, not a key variable
    login = read_login(setup.files.get(LOGIN_FILE)) if setup.login else None
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
    elif setup.login and setup.api_key is None and not (login and login.api_key):
        base = setup.env.get("OPENAI_BASE_URL") or CHATGPT_BACKEND
        # The login's account, whatever the job's Codex says: its token may serve others.
        account = {"ChatGPT-Account-ID": login.account_id} if login and login.account_id else None
        url = route("openai-responses", base, login.access_token if login else None, account)
        own_login = True
        overrides["model_providers.watcherd.requires_openai_auth"] = "true"
        if login is not None:
            files[LOGIN_FILE] = stand_in(login, token)
        # Codex renews only after a 401 here (its stand-in is fresh): the daemon holds the
        # login, so that goes to the gateway, which has no upstream there and says so.
        env[TOKEN_URL_ENV] = url.rsplit("/", 1)[0] + "/login-held-by-watcherd"
    elif login is not None and login.api_key:  # an API key in the login dir's auth.json
        base = setup.env.get("OPENAI_BASE_URL") or OPENAI_API
        url = route("openai-responses", base, login.api_key)
    else:
        base = setup.env.get("OPENAI_BASE_URL") or OPENAI_API
        url = route("openai-responses", base, operator_key(setup, None))
    if not own_login:
        overrides["model_providers.watcherd.env_key"] = f'"{TOKEN_ENV}"'
        env[TOKEN_ENV] = token
    overrides["model_providers.watcherd.base_url"] = json.dumps(url)
    env["WATCHERD_CODEX_CONFIG"] = "\n".join(f"{k}={v}" for k, v in overrides.items())
    return Wiring(env=env, files=files)


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
    login_file=LOGIN_FILE,
    renew_login=renew,
    # Rollouts, and the thread index Codex looks a resumed session up in.
    session_files=("sessions", "state_*.sqlite", "state_*.sqlite-wal", "state_*.sqlite-shm"),
    supports=frozenset({MODEL, RESUME, REVIEW}),
    wire=wire,
    allowed_flags=frozenset({"-m", "--model", "-i", "--image", "--output-schema"}),
)
