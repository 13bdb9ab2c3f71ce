"""A git server over HTTP on 127.0.0.1 that accepts pushes: git's own ``git http-backend``
(smart HTTP, as forges speak it) behind a small server that asks for Basic credentials.

Fetching is open (as for a public repository); pushing needs the user and token it was
given, as GitHub does. It records every request (method, path, the Authorization header
it got) and counts receive-pack POSTs, so a test can tell how often a client pushed and
what credential it sent where. ``push_delay`` holds a push open a while, so that a test can
look at the processes of the client meanwhile. Stops by itself.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.support.loopback import Loopback


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str | None


class GitHttpServer:
    def __init__(
        self, base: Path, user: str, tokens: set[str], lifetime: float = 600.0,
        push_delay: float = 0.0,
    ) -> None:  # fmt: skip
        self.base = base
        self.user = user
        self.tokens = tokens  # the tokens it takes (a set the test may add to)
        self.push_delay = push_delay
        self.seen: list[Seen] = []
        self.pushes = 0  # receive-pack POSTs that were let through
        self.refused_pushes = 0  # receive-pack requests without the right credential
        self.redirect_pushes: str | None = None  # "http://host:port": pushes are sent there
        self.refusals: list[str] = []  # what git http-backend said when it answered >= 400
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._serve(self)

            def do_POST(self) -> None:
                server._serve(self)

        self._loopback = Loopback(Handler, lifetime)

    @property
    def port(self) -> int:
        return self._loopback.port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.host}/{path}"

    def close(self) -> None:
        self._loopback.close()

    # -- a request ------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path, _, query = handler.path.partition("?")
        authorization = handler.headers.get("Authorization")
        with self._lock:
            self.seen.append(Seen(handler.command, handler.path, authorization))
        body = _read_body(handler)
        pushing = path.endswith("/git-receive-pack") or "service=git-receive-pack" in query
        user = None
        if pushing and self.redirect_pushes:
            handler.send_response(302)
            handler.send_header("Location", self.redirect_pushes + handler.path)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if pushing:
            user = self._authorized(authorization)
            if user is None:
                with self._lock:
                    self.refused_pushes += 1
                handler.send_response(401)
                handler.send_header("WWW-Authenticate", 'Basic realm="test"')
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            if handler.command == "POST":
                with self._lock:
                    self.pushes += 1
                time.sleep(self.push_delay)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.base),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": handler.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(self.base),
        }
        if handler.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = handler.headers["Content-Encoding"]
        if handler.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = handler.headers["Git-Protocol"]
        if user is not None:
            env["REMOTE_USER"] = user
        done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                              timeout=60, check=False)  # fmt: skip
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = done.stdout.partition(b"\n\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        if status >= 400:
            with self._lock:
                self.refusals.append(
                    f"{handler.command} {handler.path}: {status} "
                    f"{done.stderr.decode(errors='replace').strip()}"
                )
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _authorized(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except ValueError:
            return None
        return user if user == self.user and password in self.tokens else None


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                break
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        return b"".join(chunks)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""
