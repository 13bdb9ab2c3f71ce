"""A scripted stand-in for OpenAI's Chat Completions API on 127.0.0.1, for agents that
speak it (OpenCode through an OpenAI-compatible provider).

Each POST /v1/chat/completions takes the next step of the script and streams it as
server-sent events, as OpenAI does with ``"stream": true``: a call of the shell tool the
agent offers, a final text message, or a failure (an HTTP error). The agent's own
side calls (OpenCode asks for a session title first) are answered without using up a
step. Every request is recorded, whatever its path; so is any request meant for another
host (the server doubles as the HTTP(S) proxy of the agent under test, so that what
tries to leave is seen and refused). Test-only: nothing in watcherd depends on it.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback import Loopback

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
TITLE = "Scripted session title"
# OpenCode's title request: its user message starts with this (agent "title", no tools).
TITLE_MARKER = "Generate a title for this conversation"


@dataclass
class Step:
    kind: str  # "tool", "message" or "fail"
    # The shell command, the message, or the failure's reason. OpenCode retries a failure
    # whose status or text looks transient (5xx, 429, "rate limit", "overloaded", ...).
    text: str
    status: int = 400  # "fail": the HTTP status
    say: str = ""  # "tool": text streamed before the call, in the same response


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    kind: str = ""  # "step", "title", "foreign" (another host, refused) or "other" (404)


@dataclass
class ChatModel:
    steps: list[Step]
    requests: list[Request] = field(default_factory=list)
    # Instead of the next step in order: a step chosen from the request body.
    respond: Callable[[dict[str, Any]], Step] | None = None
    lifetime: float = 600.0  # stops by itself even if a test forgets to
    model: str = "scripted-model"
    _loopback: Loopback | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _count: int = 0
    # Ids unique across servers too: a resumed session holds the ids of earlier runs.
    _prefix: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def port(self) -> int:
        assert self._loopback is not None
        return self._loopback.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def proxy_url(self) -> str:
        """For HTTP_PROXY/HTTPS_PROXY: requests to other hosts arrive here, are recorded
        as ``foreign`` and refused."""
        return f"http://127.0.0.1:{self.port}"

    def step_requests(self) -> list[dict[str, Any]]:
        """The bodies of the requests that took a step of the script."""
        return [r.body for r in self.requests if r.kind == "step" and r.body is not None]

    def unexpected(self) -> list[Request]:
        """Requests for another host, or for anything but chat completions."""
        return [r for r in self.requests if r.kind in ("foreign", "other")]

    def start(self) -> ChatModel:
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _record(self, kind: str, body: dict[str, Any] | None) -> Request:
                request = Request(self.command, self.path, dict(self.headers.items()), body, kind)
                with model._lock:
                    model.requests.append(request)
                return request

            def _refuse(self) -> None:
                # An absolute URI or CONNECT: a request meant for another host.
                self._record("foreign", None)
                self.send_error(403, "watcherd test: no other host")

            def do_CONNECT(self) -> None:
                self._refuse()

            def do_GET(self) -> None:
                if not self.path.startswith("/"):
                    self._refuse()
                    return
                self._record("other", None)
                self.send_error(404)

            def do_POST(self) -> None:
                if not self.path.startswith("/"):
                    self._refuse()
                    return
                raw = self.rfile.read(int(self.headers["Content-Length"] or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                if not isinstance(body, dict) or not self.path.endswith("/chat/completions"):
                    self._record("other", body if isinstance(body, dict) else None)
                    self.send_error(404)
                    return
                if _is_title_request(body):
                    self._record("title", body)
                    self._stream(model._chunks(Step("message", TITLE), body))
                    return
                with model._lock:
                    model.requests.append(
                        Request(self.command, self.path, dict(self.headers.items()), body, "step")
                    )
                    step = model._next_step(body)
                if step is None:
                    self._error(400, "the script has no step left")
                elif step.kind == "fail":
                    self._error(step.status, step.text)
                else:
                    try:
                        chunks = model._chunks(step, body)
                    except ValueError as e:  # a 400: OpenCode does not retry it
                        self._error(400, str(e))
                        return
                    self._stream(chunks)

            def _error(self, status: int, message: str) -> None:
                error = {"message": message, "type": "scripted_failure", "code": None}
                payload = json.dumps({"error": error}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, chunks: list[dict[str, Any]]) -> None:
                payload = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
                data = (payload + "data: [DONE]\n\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._loopback = Loopback(Handler, self.lifetime)
        return self

    def _next_step(self, body: dict[str, Any]) -> Step | None:
        if self.respond is not None:
            return self.respond(body)
        return self.steps.pop(0) if self.steps else None

    def stop(self) -> None:
        loopback, self._loopback = self._loopback, None
        if loopback is not None:
            loopback.close()

    def _chunks(self, step: Step, body: dict[str, Any]) -> list[dict[str, Any]]:
        with self._lock:
            self._count += 1
            n = self._count
        rid = f"chatcmpl-{self._prefix}-{n}"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": 1_700_000_000 + n,
                "model": self.model,
                "choices": [choice],
            }

        chunks = [chunk({"role": "assistant", "content": ""})]
        if step.kind == "tool" and step.say:
            chunks.append(chunk({"content": step.say}))
        if step.kind == "tool":
            name, arguments = _shell_call(step.text, body)
            call = {"index": 0, "id": f"call_{self._prefix}_{n}", "type": "function",
                    "function": {"name": name, "arguments": ""}}  # fmt: skip
            chunks.append(chunk({"tool_calls": [call]}))
            # The arguments arrive in two pieces, as they do from OpenAI.
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                part = {"index": 0, "function": {"arguments": piece}}
                chunks.append(chunk({"tool_calls": [part]}))
            chunks.append(chunk({}, "tool_calls"))
        else:
            words = step.text.split(" ")
            for i, word in enumerate(words):
                chunks.append(chunk({"content": word if i == 0 else " " + word}))
            chunks.append(chunk({}, "stop"))
        last = chunk({})
        last["choices"] = []
        last["usage"] = USAGE
        chunks.append(last)
        return chunks


def _is_title_request(body: dict[str, Any]) -> bool:
    if body.get("tools"):
        return False
    return any(TITLE_MARKER in _text(m.get("content")) for m in _messages(body))


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body.get("messages", []) if isinstance(m, dict)]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _shell_call(command: str, body: dict[str, Any]) -> tuple[str, str]:
    """The name and JSON arguments of a call of the agent's shell tool ("bash" in
    OpenCode), with every required parameter filled in."""
    for tool in body.get("tools", []):
        function = tool.get("function", {}) if isinstance(tool, dict) else {}
        if function.get("name") in ("bash", "shell"):
            required = function.get("parameters", {}).get("required", [])
            arguments: dict[str, Any] = {"command": command}
            if "description" in required:
                arguments["description"] = "Run a scripted command"
            return str(function["name"]), json.dumps(arguments)
    offered = [t.get("function", {}).get("name") for t in body.get("tools", [])]
    raise ValueError(f"scripted tool step, but no shell tool offered: {offered}")


def user_texts(body: dict[str, Any]) -> list[str]:
    """The user's messages in a request, in order."""
    return [_text(m.get("content")) for m in _messages(body) if m.get("role") == "user"]


def has_tool_output(body: dict[str, Any]) -> bool:
    """The request carries the result of a tool call the model asked for."""
    return any(m.get("role") == "tool" for m in _messages(body))


def opencode_config(base_url: str, model: str = "scripted-model") -> dict[str, Any]:
    """An OpenCode config (opencode.json) whose one provider is the scripted server: an
    OpenAI-compatible provider (its SDK is built into OpenCode), its key read from
    SCRIPTED_API_KEY, its model priced at $1 (input) and $2 (output) per million tokens."""
    return {
        "provider": {
            "scripted": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Scripted",
                "options": {"baseURL": base_url, "apiKey": "{env:SCRIPTED_API_KEY}"},
                "models": {
                    model: {"name": "Scripted model", "cost": {"input": 1.0, "output": 2.0}}
                },
            }
        },
        "model": f"scripted/{model}",
    }
