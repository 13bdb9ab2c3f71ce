"""The model APIs the gateway speaks, one small description each, registered in APIS.

Each says which requests an agent may make (method and path below the upstream's base URL;
nothing else is forwarded), how the real key goes upstream, and how the provider reports
token usage. Which request bodies ask the provider to reach the network on the agent's
behalf (web search, URL fetching, remote MCP servers) is the same question for every API
and answered once, by ``network_tool``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from watcherd.gateway import meter


@dataclass(frozen=True)
class Route:
    method: str
    path: re.Pattern[str]  # the whole path below the upstream's base URL


@dataclass(frozen=True)
class ModelApi:
    name: str
    routes: tuple[Route, ...]
    key_headers: Callable[[str], dict[str, str]]  # the operator's key, as the API wants it
    usage: meter.Extract
    # Turn on what makes the provider report usage in a stream (chat completions).
    ask_for_usage: Callable[[dict[str, Any]], None] = lambda body: None

    def allows(self, method: str, path: str) -> bool:
        return any(r.method == method and r.path.fullmatch(path) for r in self.routes)


def _route(method: str, pattern: str) -> Route:
    return Route(method, re.compile(pattern))


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _anthropic_key(key: str) -> dict[str, str]:
    # A subscription's OAuth token (`claude setup-token`) goes as a bearer, an API key not.
    return _bearer(key) if key.startswith("sk-ant-oat") else {"x-api-key": key}


def _include_usage(body: dict[str, Any]) -> None:
    if body.get("stream") is True:
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                  "include_usage": True}  # fmt: skip


_GEMINI_MODEL = r"v1(beta|alpha)?/models/[A-Za-z0-9._-]+"

APIS: dict[str, ModelApi] = {
    api.name: api
    for api in (
        # Codex: Responses (and its remote compaction), the model list.
        ModelApi(
            name="openai-responses",
            routes=(
                _route("POST", r"responses"),
                _route("POST", r"responses/compact"),
                _route("GET", r"models"),
            ),
            key_headers=_bearer,
            usage=meter.openai_responses,
        ),
        # OpenCode's OpenAI-compatible providers (and Codex's wire_api = "chat").
        ModelApi(
            name="openai-chat",
            routes=(_route("POST", r"chat/completions"), _route("GET", r"models")),
            key_headers=_bearer,
            usage=meter.openai_chat,
            ask_for_usage=_include_usage,
        ),
        # Claude Code: Messages (with its ?beta=true) and token counting.
        ModelApi(
            name="anthropic",
            routes=(_route("POST", r"v1/messages"), _route("POST", r"v1/messages/count_tokens")),
            key_headers=_anthropic_key,
            usage=meter.anthropic,
        ),
        # Gemini CLI: generate, stream and count, for one model at a time.
        ModelApi(
            name="gemini",
            routes=(
                _route("POST", _GEMINI_MODEL + r":(generateContent|streamGenerateContent)"),
                _route("POST", _GEMINI_MODEL + r":countTokens"),
            ),
            key_headers=lambda key: {"x-goog-api-key": key},
            usage=meter.gemini,
        ),
    )
}

# Tool types and request keys that make the provider itself reach the network: hosted web
# search and fetch, remote MCP servers, computer use, Gemini's grounding and URL context.
_NETWORK_TOOL_TYPES = ("web_search", "web_fetch", "mcp", "computer", "url_context")
_NETWORK_KEYS = frozenset({
    "mcp_servers", "web_search_options", "urlContext", "url_context", "googleSearch",
    "google_search", "googleSearchRetrieval", "google_search_retrieval", "enterpriseWebSearch",
})  # fmt: skip
# Keys whose http(s) value the provider would fetch (an image or file by URL, a server).
_URL_KEYS = frozenset({"url", "image_url", "file_url", "server_url", "fileUri", "file_uri", "uri"})
_REMOTE = re.compile(r"\s*(https?|ftp)://", re.IGNORECASE)
_MAX_DEPTH = 64


def network_tool(body: Any) -> str | None:
    """What in a request body would have the provider reach the network, or None."""
    pending: list[tuple[Any, int]] = [(body, 0)]
    while pending:
        value, depth = pending.pop()
        if depth > _MAX_DEPTH:
            return "a request nested deeper than the gateway reads"
        if isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                found = _network_field(key, item)
                if found:
                    return found
                pending.append((item, depth + 1))
    return None


def _network_field(key: Any, value: Any) -> str | None:
    if key in _NETWORK_KEYS and value is not None and value is not False and value != []:
        return f"'{key}'"
    if key == "type" and isinstance(value, str) and value.startswith(_NETWORK_TOOL_TYPES):
        return f"a tool of type '{value}'"
    if key in _URL_KEYS and isinstance(value, str) and _REMOTE.match(value):
        return f"a URL for the provider to fetch ('{key}')"
    return None
