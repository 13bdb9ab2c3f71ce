"""A real ``serve`` on a loopback port, in a thread of this process, over a scratch root."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import requests

from watcherd.config import Config, load_config
from watcherd.config.serve import ServeSettings
from watcherd.spool.folders import Layout
from watcherd.web.app import run_server
from watcherd.web.tokens import add_token


@dataclass
class Served:
    config: Config
    base: str
    tokens: dict[str, str]  # scope set name -> token

    def get(self, path: str, token: str | None = None, **kw: object) -> requests.Response:
        return requests.get(self.base + path, headers=_auth(token, kw), timeout=10, **kw)  # type: ignore[arg-type]

    def post(self, path: str, token: str | None = None, **kw: object) -> requests.Response:
        return requests.post(self.base + path, headers=_auth(token, kw), timeout=10, **kw)  # type: ignore[arg-type]


def _auth(token: str | None, kw: dict[str, object]) -> dict[str, str]:
    headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def start_serving(config: Config) -> tuple[int, asyncio.AbstractEventLoop, asyncio.Event,
                                           threading.Thread]:  # fmt: skip
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    port: list[int] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(run_server(
            config, ready=lambda p: (port.append(p), ready.set()), stop=stop
        ))  # fmt: skip

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "serve did not start"
    return port[0], loop, stop, thread


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "work"
    Layout(root).ensure()
    config = load_config(None, environ={}, root=str(root))
    config = replace(config, serve=ServeSettings(port=0), allowed_protocols=("file", "https"))
    path = root / "state" / "tokens.yaml"
    tokens = {
        "read": add_token(path, "reader", ["read"]),
        "submit": add_token(path, "submitter", ["submit"]),
        "admin": add_token(path, "admin", ["read", "submit", "admin"]),
    }
    port, loop, stop, thread = start_serving(config)
    yield Served(config, f"http://127.0.0.1:{port}", tokens)
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
