"""A scripted stand-in for OpenAI's Responses API on 127.0.0.1, for the real Codex CLI.

Each POST /v1/responses takes the next step of the script: run a command through
the tool Codex offers, call a tool of an MCP server Codex was given, answer with a final
message, or fail the response.
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

USAGE = {
    "input_tokens": 11,
    "input_tokens_details": None,
    "output_tokens": 7,
    "output_tokens_details": None,
    "total_tokens": 18,
}


@dataclass
class Step:
    kind: str  # "tool", "mcp", "message" or "fail"
    text: str  # the command, the MCP tool's name, the message or the failure
    arguments: dict[str, Any] | None = None  # an "mcp" step's; more of a "tool" step's


@dataclass
class ScriptedModel:
    steps: list[Step]
    requests: list[dict[str, Any]] = field(default_factory=list)
    # Instead of the next step in order: a step chosen from the request (for jobs that run
    # at the same time, whose requests interleave).
    respond: Callable[[dict[str, Any]], Step] | None = None
    authorizations: list[str] = field(default_factory=list)  # each request's Authorization
    lifetime: float = 600.0  # stops by itself even if a test forgets to
    _loopback: Loopback | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        assert self._loopback is not None
        return f"http://127.0.0.1:{self._loopback.port}/v1"

    def start(self) -> ScriptedModel:
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)))
                with model._lock:
                    model.requests.append(body)
                    model.authorizations.append(self.headers.get("Authorization", ""))
                    number = len(model.requests)
                    step = model._next_step(body)
                if not self.path.endswith("/responses") or step is None:
                    self.send_error(404)
                    return
                events = model._events(step, body, number)
                payload = "".join(
                    f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self.send_error(404)

        self._loopback = Loopback(Handler, self.lifetime)
        return self

    def _next_step(self, request: dict[str, Any]) -> Step | None:
        if self.respond is not None:
            return self.respond(request)
        return self.steps.pop(0) if self.steps else None

    def stop(self) -> None:
        loopback, self._loopback = self._loopback, None
        if loopback is not None:
            loopback.close()

    def _events(self, step: Step, request: dict[str, Any], n: int) -> list[dict[str, Any]]:
        rid = f"r{n}"
        created = {"type": "response.created", "response": {"id": rid}}
        if step.kind == "fail":
            failed = {"code": "scripted_failure", "message": step.text}
            return [created, {"type": "response.failed", "response": {"id": rid, "error": failed}}]
        if step.kind == "tool":
            item = _tool_call(step.text, request, f"c{n}", step.arguments)
        elif step.kind == "mcp":
            item = _mcp_call(step.text, step.arguments or {}, request, f"c{n}")
        else:
            item = {
                "type": "message",
                "role": "assistant",
                "id": f"m{n}",
                "content": [{"type": "output_text", "text": step.text}],
            }
        completed = {"type": "response.completed", "response": {"id": rid, "usage": USAGE}}
        return [created, {"type": "response.output_item.done", "item": item}, completed]


def _tool_call(
    command: str, request: dict[str, Any], call_id: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    offered = {tool.get("name") for tool in request.get("tools", []) if isinstance(tool, dict)}
    if "exec_command" in offered:
        # extra: say {"yield_time_ms": 30000} for a command that takes longer than 5 s
        name, arguments = "exec_command", {"cmd": command, "yield_time_ms": 5000, **(extra or {})}
    elif "shell_command" in offered:
        name, arguments = "shell_command", {"command": command}
    else:
        name, arguments = "shell", {"command": ["bash", "-lc", command]}
    return {
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(arguments),
    }


def _mcp_call(
    tool: str, arguments: dict[str, Any], request: dict[str, Any], call_id: str
) -> dict[str, Any]:
    """A call of an MCP server's tool as Codex offers it: inside a namespace tool
    (``mcp__<server>``, Codex 0.171), or as a function named ``mcp__<server>__<tool>``."""
    call = {"type": "function_call", "call_id": call_id, "arguments": json.dumps(arguments)}
    for offered in request.get("tools", []):
        if not isinstance(offered, dict):
            continue
        if offered.get("type") == "namespace":
            inner = {t.get("name") for t in offered.get("tools", []) if isinstance(t, dict)}
            if tool in inner:
                return {**call, "name": tool, "namespace": offered["name"]}
        elif str(offered.get("name", "")).endswith(f"__{tool}"):
            return {**call, "name": offered["name"]}
    names = [t.get("name") for t in request.get("tools", []) if isinstance(t, dict)]
    raise AssertionError(f"Codex offers no MCP tool {tool!r}; it offers {names}")


def tool_output(request: dict[str, Any]) -> str | None:
    """The output of the last tool call in the request, as Codex passed it back."""
    items = [item for item in request.get("input", []) if isinstance(item, dict)]
    for item in reversed(items):
        if item.get("type") == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):  # content items
                return "".join(str(part.get("text", "")) for part in output
                               if isinstance(part, dict))  # fmt: skip
            return str(output)
    return None


def instructions_of(request: dict[str, Any]) -> str:
    """Everything Codex told the model besides the user's prompt (developer messages)."""
    texts = [str(request.get("instructions", ""))]
    for item in request.get("input", []):
        if isinstance(item, dict) and item.get("role") in ("developer", "system"):
            for part in item.get("content", []):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
    return "\n".join(texts)


def has_tool_output(request: dict[str, Any]) -> bool:
    """The request carries the output of a tool call the model asked for."""
    return "function_call_output" in json.dumps(request.get("input", ""))


def prompt_of(request: dict[str, Any]) -> str:
    """The user's text in a request (all of it, joined)."""
    texts = []
    for item in request.get("input", []):
        if isinstance(item, dict) and item.get("role") == "user":
            for part in item.get("content", []):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
    return "\n".join(texts)


def codex_config(base_url: str) -> str:
    """config.toml pointing Codex at the scripted server."""
    return f"""model = "scripted-model"
model_provider = "scripted"

[model_providers.scripted]
name = "scripted"
base_url = "{base_url}"
wire_api = "responses"
env_key = "SCRIPTED_API_KEY"
supports_websockets = false
request_max_retries = 0
stream_max_retries = 0
"""
