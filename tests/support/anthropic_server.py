"""A scripted stand-in for Anthropic's Messages API on 127.0.0.1, for the real Claude Code.

Each POST /v1/messages that offers tools (Claude Code's agent loop) takes the next step of
the script: run a shell command through Claude Code's Bash tool, answer with a final
message, or fail (a failure stays: every later turn fails the same way, as Claude Code
retries some errors, a 400 for instance without its beta headers one by one). Every
message and tool_use gets an id of its own.

Every request is recorded, whatever its method and path. With
CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1, Claude Code 2.1.332 sends nothing but POST
/v1/messages?beta=true; without it, it also probes HEAD /api/hello on this server and
calls api.anthropic.com. Used as HTTPS_PROXY as well, the server sees such calls as
CONNECT requests (and refuses them). Side calls that offer no tools (a title, a quota
check: none seen in 2.1.332 with -p) get a short text and take no step;
/v1/messages/count_tokens gets a count. Test-only: nothing in watcherd depends on it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback import Loopback

USAGE = {"input_tokens": 11, "output_tokens": 7}


@dataclass
class Step:
    kind: str  # "tool", "message" or "fail"
    text: str
    status: int = 403  # of a failure: the HTTP status, or 200 for an error event in the stream


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the decoded JSON body, or None

    @property
    def is_turn(self) -> bool:
        """A request of Claude Code's agent loop (it offers tools): one that takes a step."""
        return (
            self.method == "POST"
            and self.path.split("?", 1)[0] == "/v1/messages"
            and isinstance(self.body, dict)
            and bool(self.body.get("tools"))
        )


@dataclass
class ScriptedAnthropic:
    steps: list[Step]
    requests: list[Request] = field(default_factory=list)
    # Instead of the next step in order: a step chosen from the request.
    respond: Callable[[dict[str, Any]], Step] | None = None
    lifetime: float = 600.0  # stops by itself even if a test forgets to
    _loopback: Loopback | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        """For ANTHROPIC_BASE_URL (Claude Code appends /v1/messages itself)."""
        assert self._loopback is not None
        return f"http://127.0.0.1:{self._loopback.port}"

    @property
    def turns(self) -> list[dict[str, Any]]:
        """The bodies of the agent-loop requests, in order."""
        with self._lock:
            return [r.body for r in self.requests if r.is_turn]

    def start(self) -> ScriptedAnthropic:
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _record(self) -> Request:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                request = Request(self.command, self.path, dict(self.headers.items()), body)
                with model._lock:
                    model.requests.append(request)
                return request

            def _send(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("request-id", f"req_{uuid.uuid4().hex}")
                self.end_headers()
                self.wfile.write(payload)

            def _json(self, status: int, value: Any) -> None:
                self._send(status, json.dumps(value).encode(), "application/json")

            def do_POST(self) -> None:
                request = self._record()
                path = request.path.split("?", 1)[0]
                body = request.body if isinstance(request.body, dict) else {}
                if path == "/v1/messages/count_tokens":
                    self._json(200, {"input_tokens": 42})
                    return
                if path != "/v1/messages":
                    self._json(404, _error("not_found_error", f"no {path} here"))
                    return
                if request.is_turn:
                    with model._lock:
                        step = model._next_step(body)
                    if step is None:
                        self._json(400, _error("invalid_request_error", "the script is over"))
                        return
                else:  # a side call: a quota check, a title
                    step = Step("message", "Scripted side answer.")
                if step.kind == "fail" and step.status != 200:
                    kind = _ERROR_TYPES.get(step.status, "api_error")
                    self._json(step.status, _error(kind, step.text))
                elif step.kind == "fail":  # a stream that starts, then fails
                    start = _stream(_message(Step("message", ""), body))[0]
                    self._sse([start, _error("api_error", step.text)])
                elif body.get("stream"):
                    self._sse(_stream(_message(step, body)))
                else:
                    self._json(200, _message(step, body))

            def _sse(self, events: list[dict[str, Any]]) -> None:
                payload = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
                self._send(200, payload.encode(), "text/event-stream")

            def do_GET(self) -> None:
                request = self._record()
                if request.path.split("?", 1)[0] == "/api/hello":
                    self._json(200, {})
                else:
                    self._json(404, _error("not_found_error", "nothing here"))

            def do_HEAD(self) -> None:  # Claude Code's connectivity check: /api/hello
                request = self._record()
                found = request.path.split("?", 1)[0] == "/api/hello"
                self.send_response(200 if found else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_CONNECT(self) -> None:
                # As HTTPS_PROXY, the server sees (and refuses) every request that would
                # have left for another host.
                self._record()
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

        self._loopback = Loopback(Handler, self.lifetime)
        return self

    def _next_step(self, request: dict[str, Any]) -> Step | None:
        if self.respond is not None:
            return self.respond(request)
        if not self.steps:
            return None
        # A failure stays: Claude Code retries some (without its betas, for instance).
        return self.steps[0] if self.steps[0].kind == "fail" else self.steps.pop(0)

    def stop(self) -> None:
        loopback, self._loopback = self._loopback, None
        if loopback is not None:
            loopback.close()


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _message(step: Step, request: dict[str, Any]) -> dict[str, Any]:
    """A whole assistant message. Every message and tool_use has an id of its own: a
    resumed session whose ids repeat would see its old tool results answer the new call."""
    if step.kind == "tool":
        content: list[dict[str, Any]] = [
            {
                "type": "tool_use",
                "id": f"toolu_{uuid.uuid4().hex[:24]}",
                "name": "Bash",
                "input": {"command": step.text, "description": "Run a scripted command"},
            }
        ]
        stop_reason = "tool_use"
    else:
        content = [{"type": "text", "text": step.text}]
        stop_reason = "end_turn"
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "scripted-model"),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": dict(USAGE),
    }


def _stream(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The server-sent events of a streamed message."""
    start = {**message, "content": [], "stop_reason": None,
             "usage": {"input_tokens": USAGE["input_tokens"], "output_tokens": 1}}  # fmt: skip
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            empty = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            empty = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        events += [
            {"type": "content_block_start", "index": index, "content_block": empty},
            {"type": "content_block_delta", "index": index, "delta": delta},
            {"type": "content_block_stop", "index": index},
        ]
    events += [
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": USAGE["output_tokens"]},
        },
        {"type": "message_stop"},
    ]
    return events


def user_texts(request: dict[str, Any]) -> list[str]:
    """Every text the user sent in a request (strings and text blocks), in order."""
    texts = []
    for message in request.get("messages", []):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
    return texts


def tool_results(request: dict[str, Any]) -> list[str]:
    """The outputs of tool calls that went back to the model in a request."""
    found = []
    for message in request.get("messages", []):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "tool_result":
                inner = part.get("content")
                if isinstance(inner, list):
                    inner = "".join(str(p.get("text", "")) for p in inner if isinstance(p, dict))
                found.append(str(inner))
    return found
