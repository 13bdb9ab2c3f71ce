"""A scripted stand-in for the Gemini API on 127.0.0.1, for the real Gemini CLI.

Each POST .../models/M:streamGenerateContent takes the next step of the script: call the
shell tool the CLI offers (``run_shell_command``), answer with a final text, or fail with
an API error. Every request the server gets, whatever its path or method, is recorded,
so a test sees exactly what the CLI sent (and that it sent nothing it should not).
Test-only: nothing in watcherd depends on it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback import Loopback

USAGE = {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18}
SHELL_TOOL = "run_shell_command"


@dataclass
class Step:
    kind: str  # "tool", "message" or "fail"
    text: str  # the command, the message or the error
    say: str = ""  # for "tool": text the model says before its call


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # with its query string
    headers: dict[str, str]  # names in lower case
    body: Any  # the JSON body, or the raw text when it is not JSON, or None

    @property
    def is_generation(self) -> bool:
        return ":streamGenerateContent" in self.path or ":generateContent" in self.path


@dataclass
class ScriptedGemini:
    steps: list[Step]
    requests: list[Request] = field(default_factory=list)
    # Instead of the next step in order: a step chosen from the request body.
    respond: Callable[[dict[str, Any]], Step] | None = None
    lifetime: float = 600.0  # stops by itself even if a test forgets to
    _loopback: Loopback | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        """For GOOGLE_GEMINI_BASE_URL (the CLI adds /v1beta/models/...)."""
        assert self._loopback is not None
        return f"http://127.0.0.1:{self._loopback.port}"

    def start(self) -> ScriptedGemini:
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _record(self) -> Request:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body: Any = None
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = raw.decode(errors="replace")
                request = Request(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with model._lock:
                    model.requests.append(request)
                return request

            def _send(self, status: int, content_type: str, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _error(self, status: int, message: str, reason: str) -> None:
                error = {"error": {"code": status, "message": message, "status": reason}}
                self._send(status, "application/json", json.dumps(error).encode())

            def do_POST(self) -> None:
                request = self._record()
                body = request.body if isinstance(request.body, dict) else {}
                if ":countTokens" in self.path:
                    self._send(200, "application/json", b'{"totalTokens": 11}')
                    return
                if ":streamGenerateContent" not in self.path:
                    self._error(404, f"not scripted: {self.path}", "NOT_FOUND")
                    return
                with model._lock:
                    step = model._next_step(body)
                if step is None:
                    self._error(400, "the script has no more steps", "INVALID_ARGUMENT")
                elif step.kind == "fail":
                    self._error(400, step.text, "INVALID_ARGUMENT")
                else:
                    chunk = json.dumps(_response(step, body))
                    self._send(200, "text/event-stream", f"data: {chunk}\r\n\r\n".encode())

            def do_GET(self) -> None:
                self._record()
                self._error(404, f"not scripted: {self.path}", "NOT_FOUND")

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

    @property
    def generations(self) -> list[dict[str, Any]]:
        """The bodies of the model calls, in order."""
        with self._lock:
            return [r.body for r in self.requests if r.is_generation and isinstance(r.body, dict)]


def _response(step: Step, body: dict[str, Any]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if step.kind == "tool":
        if step.say:
            parts.append({"text": step.say})
        call = {"name": _shell_tool(body), "args": {"command": step.text}}
        parts.append({"functionCall": call})
    else:
        parts.append({"text": step.text})
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": USAGE,
        "modelVersion": "scripted-model",
    }


def _shell_tool(body: dict[str, Any]) -> str:
    """The name under which the request offers its shell tool."""
    for tool in body.get("tools", []):
        for declaration in tool.get("functionDeclarations", []) if isinstance(tool, dict) else []:
            name = declaration.get("name") if isinstance(declaration, dict) else None
            if isinstance(name, str) and "shell" in name:
                return name
    return SHELL_TOOL


def user_texts(body: dict[str, Any]) -> list[str]:
    """The text parts of the user turns of a request, in order."""
    texts = []
    for content in body.get("contents", []):
        if isinstance(content, dict) and content.get("role") == "user":
            for part in content.get("parts", []):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
    return texts


def function_responses(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The functionResponse parts of a request: the tool results sent back to the model."""
    found = []
    for content in body.get("contents", []):
        for part in content.get("parts", []) if isinstance(content, dict) else []:
            if isinstance(part, dict) and isinstance(part.get("functionResponse"), dict):
                found.append(part["functionResponse"])
    return found
