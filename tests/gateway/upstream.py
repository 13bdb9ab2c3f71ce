"""A scripted model provider on 127.0.0.1 for the gateway's tests: it records every request
(headers, path, body) and answers with an SSE stream or a JSON body carrying usage."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeProvider:
    """Answers every call with ``events`` (SSE) or ``document`` (JSON). ``hold`` keeps a
    stream open after its first event until it is set (to show streaming is unbuffered)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    document: dict[str, Any] | None = None
    seen: list[Seen] = field(default_factory=list)
    hold: threading.Event | None = None
    port: int = 0

    def start(self) -> FakeProvider:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path_qs, dict(request.headers), body))
        if self.document is not None:
            return web.json_response(self.document)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for n, event in enumerate(self.events):
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
            if n == 0 and self.hold is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.hold.wait, 30)
        await response.write_eof()
        return response
