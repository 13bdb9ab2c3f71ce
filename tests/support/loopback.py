"""An HTTP server on 127.0.0.1 for tests, that stops by itself even if a test forgets to."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Loopback:
    def __init__(self, handler: type[BaseHTTPRequestHandler], lifetime: float) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        # A daemon timer: it must never keep the test process alive.
        self._timer = threading.Timer(lifetime, self.close)
        self._timer.daemon = True
        self._timer.start()
        self._closed = threading.Lock()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._timer.cancel()
        if self._closed.acquire(blocking=False):  # once, whoever calls first
            self._server.shutdown()
            self._server.server_close()
