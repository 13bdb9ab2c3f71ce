"""A scripted GitHub REST API on 127.0.0.1: the endpoints publishing uses, with state
(repositories, their pull requests), Bearer tokens checked, and failures a test queues
(a status, a body, a redirect to another host). A GitHub App's JWT is checked for real:
its RS256 signature with ``openssl`` against the App's public key. Stops by itself.

    GET   /repos/{o}/{r}                       {"default_branch": ...}
    GET   /repos/{o}/{r}/pulls?head=o:b&state=open
    POST  /repos/{o}/{r}/pulls                 422 when one is open for that head
    PATCH /repos/{o}/{r}/pulls/{n}
    POST  /graphql                  markPullRequestReadyForReview, convertPullRequestToDraft
    GET   /repos/{o}/{r}/installation          (JWT)
    POST  /app/installations/{id}/access_tokens  (JWT)
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.loopback import Loopback


@dataclass
class Scripted:
    """An answer queued for the next request(s) whose method and path match."""

    method: str
    path: str  # a regular expression, matched against the path (no query)
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class App:
    app_id: str
    public_key: Path
    installation_id: int = 4242
    repositories: list[str] = field(default_factory=list)  # asked for in each token


class ScriptedGitHub:
    def __init__(
        self, tokens: set[str], repos: dict[str, str], lifetime: float = 600.0,
        app: App | None = None,
    ) -> None:  # fmt: skip
        self.tokens = tokens  # Bearer tokens it takes (shared with the git server)
        self.repos = dict(repos)  # "acme/widgets" -> default branch
        self.pulls: dict[str, list[dict[str, Any]]] = {name: [] for name in repos}
        self.app = app
        self.seen: list[Seen] = []
        self.script: list[Scripted] = []
        self.installation_tokens: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                api._serve(self)

            def do_POST(self) -> None:
                api._serve(self)

            def do_PATCH(self) -> None:
                api._serve(self)

        self._loopback = Loopback(Handler, lifetime)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._loopback.port}"

    def close(self) -> None:
        self._loopback.close()

    def queue(self, method: str, path: str, status: int, body: Any = None,
              headers: dict[str, str] | None = None, times: int = 1) -> None:  # fmt: skip
        with self._lock:
            self.script.append(Scripted(method, path, status, body, headers or {}, times))

    def open_pulls(self, repo: str) -> list[dict[str, Any]]:
        return [pull for pull in self.pulls[repo] if pull["state"] == "open"]

    # -- a request ------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with self._lock:
            self.seen.append(Seen(handler.command, handler.path, dict(handler.headers), body))
            scripted = self._scripted(handler.command, parts.path)
        if scripted is not None:
            self._answer(handler, scripted.status, scripted.body, scripted.headers)
            return
        status, answer = self._route(handler, parts.path, parse_qs(parts.query), body)
        self._answer(handler, status, answer, {})

    def _scripted(self, method: str, path: str) -> Scripted | None:
        for entry in self.script:
            if entry.method == method and re.fullmatch(entry.path, path):
                entry.times -= 1
                if entry.times <= 0:
                    self.script.remove(entry)
                return entry
        return None

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, body: Any,
                headers: dict[str, str]) -> None:  # fmt: skip
        data = b"" if body is None else json.dumps(body).encode()
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _route(self, handler: BaseHTTPRequestHandler, path: str, query: dict[str, list[str]],
               body: Any) -> tuple[int, Any]:  # fmt: skip
        auth = handler.headers.get("Authorization", "")
        method = handler.command
        if path.startswith("/app/") or path.endswith("/installation"):
            return self._app_route(method, path, auth, body)
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return 401, {"message": "Bad credentials"}
        if method == "POST" and path == "/graphql":
            return self._graphql(body)
        found = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/pulls(?:/(\d+))?)?", path)
        if found is None:
            return 404, {"message": "Not Found"}
        repo = f"{found[1]}/{found[2]}"
        if repo not in self.repos:
            return 404, {"message": "Not Found"}
        if found[3] is None and method == "GET":
            return 200, {"full_name": repo, "default_branch": self.repos[repo]}
        with self._lock:
            pulls = self.pulls[repo]
            if found[4] is None and method == "GET":
                head = query.get("head", [""])[0]
                state = query.get("state", ["open"])[0]
                return 200, [p for p in pulls if (not head or f"{found[1]}:{p['head']['ref']}"
                                                  == head) and p["state"] == state]  # fmt: skip
            if found[4] is None and method == "POST":
                return self._create(repo, pulls, body)
            if found[4] is not None and method == "PATCH":
                for pull in pulls:
                    if pull["number"] == int(found[4]):
                        pull.update({k: body[k] for k in ("title", "body", "state") if k in body})
                        return 200, pull
                return 404, {"message": "Not Found"}
        return 404, {"message": "Not Found"}

    def _create(self, repo: str, pulls: list[dict[str, Any]], body: Any) -> tuple[int, Any]:
        if any(p["head"]["ref"] == body["head"] and p["state"] == "open" for p in pulls):
            return 422, {"message": "Validation Failed", "errors": [
                {"message": f"A pull request already exists for {repo.split('/')[0]}:"
                            f"{body['head']}."}]}  # fmt: skip
        number = len(pulls) + 1
        pull = {
            "number": number, "html_url": f"https://forge.test/{repo}/pull/{number}",
            "node_id": f"PR_node{number}", "state": "open", "draft": bool(body.get("draft")),
            "title": body["title"], "body": body.get("body") or "",
            "head": {"ref": body["head"]}, "base": {"ref": body["base"]},
        }  # fmt: skip
        pulls.append(pull)
        return 201, pull

    def _graphql(self, body: Any) -> tuple[int, Any]:
        query, node = body["query"], body["variables"]["id"]
        with self._lock:
            for pulls in self.pulls.values():
                for pull in pulls:
                    if pull["node_id"] == node:
                        pull["draft"] = "convertPullRequestToDraft" in query
                        return 200, {"data": {"x": {"pullRequest": {"isDraft": pull["draft"]}}}}
        return 200, {
            "errors": [{"message": f"Could not resolve to a node with the global id {node}"}]
        }

    # -- a GitHub App ---------------------------------------------------------------------

    def _app_route(self, method: str, path: str, auth: str, body: Any) -> tuple[int, Any]:
        if self.app is None or not auth.startswith("Bearer ") or not self._jwt_ok(auth[7:]):
            return 401, {"message": "A JSON web token could not be decoded"}
        if method == "GET" and path.endswith("/installation"):
            return 200, {"id": self.app.installation_id}
        if (
            method == "POST"
            and path == f"/app/installations/{self.app.installation_id}/access_tokens"
        ):
            token = f"ghs_installation_{len(self.installation_tokens) + 1}_x7q"
            self.installation_tokens.append({"token": token, "asked": body})
            self.tokens.add(token)
            return 201, {"token": token, "expires_at": "2099-01-01T00:00:00Z"}
        return 404, {"message": "Not Found"}

    def _jwt_ok(self, jwt: str) -> bool:
        assert self.app is not None
        try:
            header, claims, signature = jwt.split(".")
            data = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
            sig = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        except ValueError:
            return False
        if data.get("iss") != self.app.app_id or data.get("exp", 0) < time.time():
            return False
        with tempfile.NamedTemporaryFile() as sig_file:
            sig_file.write(sig)
            sig_file.flush()
            done = subprocess.run(
                ["openssl", "dgst", "-sha256", "-verify", str(self.app.public_key),
                 "-signature", sig_file.name],
                input=f"{header}.{claims}".encode(), capture_output=True, check=False,
            )  # fmt: skip
        return done.returncode == 0
