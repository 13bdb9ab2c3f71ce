"""Each agent's way to its model: the operator's setup in, the gateway's upstreams and the
job's variables and files out. The key goes only to the gateway; the job gets the token."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from watcherd.agents import AGENTS
from watcherd.agents.base import ModelSetup, Wiring

TOKEN = "wdj-the-jobs-token"
KEY = "sk-operator-key"


class Routes:
    """A stand-in for the gateway's router: what was routed, and the URL it hands back."""

    def __init__(self) -> None:
        self.routed: list[tuple[str, str, str | None]] = []
        self.headers: list[dict[str, str]] = []  # what the gateway sets on each upstream

    def __call__(
        self, api: str, url: str, key: str | None, headers: Mapping[str, str] | None = None
    ) -> str:
        self.routed.append((api, url, key))
        self.headers.append(dict(headers or {}))
        return f"http://127.0.0.1:48080/m{len(self.routed) - 1}"


def wire(agent: str, setup: ModelSetup) -> tuple[Wiring, Routes]:
    routes = Routes()
    wire = AGENTS[agent].wire
    assert wire is not None
    return wire(setup, routes, TOKEN), routes


def no_key_anywhere(wiring: Wiring) -> None:
    assert KEY not in json.dumps(dict(wiring.env))
    assert all(KEY.encode() not in data for data in wiring.files.values())


def test_codex_takes_the_operators_provider_and_gets_a_provider_of_watcherds_own() -> None:
    config = b"""model = "m"\nmodel_provider = "corp"\n[model_providers.corp]
base_url = "https://llm.corp.test/v1"\nenv_key = "CORP_KEY"\nwire_api = "chat"\n"""
    wiring, routes = wire("codex", ModelSetup({"config.toml": config}, {"CORP_KEY": KEY}))
    assert routes.routed == [("openai-chat", "https://llm.corp.test/v1", KEY)]
    overrides = wiring.env["WATCHERD_CODEX_CONFIG"].splitlines()
    assert 'model_provider="watcherd"' in overrides
    assert 'model_providers.watcherd.base_url="http://127.0.0.1:48080/m0"' in overrides
    assert 'model_providers.watcherd.env_key="WATCHERD_MODEL_TOKEN"' in overrides
    assert 'model_providers.watcherd.wire_api="chat"' in overrides
    assert 'web_search="disabled"' in overrides
    assert wiring.env["WATCHERD_MODEL_TOKEN"] == TOKEN
    no_key_anywhere(wiring)


def test_codex_with_an_api_key_goes_to_openai_or_the_operators_base_url() -> None:
    wiring, routes = wire("codex", ModelSetup({}, {}, api_key=("CODEX_API_KEY", KEY)))
    assert routes.routed == [("openai-responses", "https://api.openai.com/v1", KEY)]
    no_key_anywhere(wiring)
    _, routes = wire("codex", ModelSetup({}, {"OPENAI_BASE_URL": "https://proxy.test/v1"},
                                         api_key=("CODEX_API_KEY", KEY)))  # fmt: skip
    assert routes.routed[0][1] == "https://proxy.test/v1"


def test_a_chatgpt_login_stays_in_the_gateway_and_the_job_gets_a_stand_in() -> None:
    tokens = {"access_token": KEY, "refresh_token": "rt-operator", "id_token": "h.e30.s",
              "account_id": "acct-1"}  # fmt: skip
    login = json.dumps({"tokens": tokens, "last_refresh": "2026-12-01T00:00:00Z"}).encode()
    wiring, routes = wire("codex", ModelSetup({"auth.json": login}, {}, login=True))
    assert routes.routed == [("openai-responses", "https://chatgpt.com/backend-api/codex", KEY)]
    assert routes.headers == [{"ChatGPT-Account-ID": "acct-1"}]  # the login's, not the job's
    assert "requires_openai_auth=true" in wiring.env["WATCHERD_CODEX_CONFIG"]
    stand_in = json.loads(wiring.files["auth.json"])["tokens"]
    assert (stand_in["access_token"], stand_in["account_id"]) == (TOKEN, "acct-1")
    assert b"rt-operator" not in wiring.files["auth.json"]
    no_key_anywhere(wiring)
    # A renewal Codex would try (after a 401) reaches the gateway, where nothing is routed.
    renewal = wiring.env["CODEX_REFRESH_TOKEN_URL_OVERRIDE"]
    assert renewal.startswith("http://127.0.0.1:48080/") and not renewal.endswith("/m0")
    # The operator's OPENAI_BASE_URL is where a ChatGPT login goes too, as for Codex.
    _, routes = wire("codex", ModelSetup({"auth.json": login},
                                         {"OPENAI_BASE_URL": "https://proxy.test/codex"},
                                         login=True))  # fmt: skip
    assert routes.routed[0][1:] == ("https://proxy.test/codex", KEY)


def test_an_api_key_in_the_login_dir_stays_in_the_gateway() -> None:
    login = json.dumps({"OPENAI_API_KEY": KEY, "tokens": None}).encode()
    wiring, routes = wire("codex", ModelSetup({"auth.json": login}, {}, login=True))
    assert routes.routed == [("openai-responses", "https://api.openai.com/v1", KEY)]
    assert wiring.env["WATCHERD_MODEL_TOKEN"] == TOKEN and "auth.json" not in wiring.files
    no_key_anywhere(wiring)


def test_claude_settings_are_pointed_at_the_gateway_and_lose_every_key() -> None:
    settings = {
        "env": {"ANTHROPIC_BASE_URL": "https://llm.corp.test", "ANTHROPIC_AUTH_TOKEN": KEY,
                "HTTPS_PROXY": "http://evil.test:8080", "FOO": "bar"},
        "apiKeyHelper": "/usr/local/bin/get-key", "model": "opus",
    }  # fmt: skip
    setup = ModelSetup({"settings.json": json.dumps(settings).encode()}, {})
    wiring, routes = wire("claude", setup)
    assert routes.routed == [("anthropic", "https://llm.corp.test", KEY)]
    written = json.loads(wiring.files["settings.json"])
    assert written["env"] == {"ANTHROPIC_BASE_URL": "http://127.0.0.1:48080/m0", "FOO": "bar"}
    assert "apiKeyHelper" not in written and written["model"] == "opus"
    assert wiring.env == {"ANTHROPIC_BASE_URL": "http://127.0.0.1:48080/m0",
                          "ANTHROPIC_API_KEY": TOKEN}  # fmt: skip
    no_key_anywhere(wiring)


def test_gemini_goes_to_googles_api_or_the_operators_base_url() -> None:
    wiring, routes = wire("gemini", ModelSetup({}, {}, api_key=("GEMINI_API_KEY", KEY)))
    assert routes.routed == [("gemini", "https://generativelanguage.googleapis.com", KEY)]
    assert wiring.env["GEMINI_API_KEY"] == TOKEN
    _, routes = wire("gemini", ModelSetup({}, {"GOOGLE_GEMINI_BASE_URL": "http://g.test"}))
    assert routes.routed[0][1] == "http://g.test"


def test_every_opencode_provider_with_a_base_url_is_routed_with_its_own_key() -> None:
    config: dict[str, Any] = {"provider": {
        "corp": {"npm": "@ai-sdk/openai-compatible",
                 "options": {"baseURL": "https://llm.corp.test/v1", "apiKey": "{env:CORP}"}},
        "claude": {"npm": "@ai-sdk/anthropic",
                   "options": {"baseURL": "https://a.test", "apiKey": "literal-" + KEY}},
        "builtin": {"options": {"apiKey": "{env:CORP}"}},  # no baseURL: not reachable
    }}  # fmt: skip
    name = "config/opencode/opencode.json"
    wiring, routes = wire("opencode", ModelSetup({name: json.dumps(config).encode()},
                                                 {"CORP": KEY}))  # fmt: skip
    assert routes.routed == [
        ("openai-chat", "https://llm.corp.test/v1", KEY),
        ("anthropic", "https://a.test", "literal-" + KEY),
    ]
    providers = json.loads(wiring.files[name])["provider"]
    assert providers["corp"]["options"] == {
        "baseURL": "http://127.0.0.1:48080/m0", "apiKey": "{env:WATCHERD_MODEL_TOKEN}"
    }  # fmt: skip
    assert providers["claude"]["options"]["baseURL"].endswith("/m1")
    assert wiring.env == {"WATCHERD_MODEL_TOKEN": TOKEN}
    no_key_anywhere(wiring)


def test_every_api_an_agent_routes_to_is_one_the_gateway_speaks() -> None:
    from watcherd.gateway.apis import APIS

    setups = [ModelSetup({}, {}, login=True), ModelSetup({}, {}, api_key=("K", KEY))]
    for agent in AGENTS:
        for setup in setups:
            _, routes = wire(agent, setup)
            assert {api for api, _, _ in routes.routed} <= set(APIS), agent


def test_codex_keeps_how_the_operators_provider_retries_and_what_it_asks_but_no_headers() -> None:
    config = b"""model_provider = "corp"\n[model_providers.corp]
base_url = "https://llm.corp.test/v1"\nrequest_max_retries = 0\nstream_max_retries = 1
query_params = { api-version = "2025-01-01" }\nhttp_headers = { Authorization = "Bearer x" }
"""
    wiring, _ = wire("codex", ModelSetup({"config.toml": config}, {}))
    overrides = wiring.env["WATCHERD_CODEX_CONFIG"].splitlines()
    assert "model_providers.watcherd.request_max_retries=0" in overrides
    assert "model_providers.watcherd.stream_max_retries=1" in overrides
    assert 'model_providers.watcherd.query_params={"api-version"="2025-01-01"}' in overrides
    assert not [o for o in overrides if "http_headers" in o or "Bearer" in o]
