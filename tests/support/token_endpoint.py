"""An OAuth token endpoint on 127.0.0.1, as Codex's login renews against: it answers each
POST with the next of its scripted answers (status, JSON) and keeps what it was sent."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback import Loopback


@dataclass
class TokenEndpoint:
    answers: list[tuple[int, dict[str, Any]]]
    requests: list[dict[str, Any]] = field(default_factory=list)
    lifetime: float = 300.0
    _loopback: Loopback | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._loopback is not None
        return f"http://127.0.0.1:{self._loopback.port}/oauth/token"

    def start(self) -> TokenEndpoint:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)))
                with endpoint._lock:
                    endpoint.requests.append(body)
                    status, answer = endpoint.answers.pop(0) if endpoint.answers else (500, {})
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._loopback = Loopback(Handler, self.lifetime)
        return self

    def stop(self) -> None:
        loopback, self._loopback = self._loopback, None
        if loopback is not None:
            loopback.close()
