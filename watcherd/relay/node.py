"""``watcherd relay``: a node's end. It keeps a control connection to the daemon, makes
``<sockets_dir>/<id>/`` with the job's two sockets for every job the daemon serves (a task
of the job placed on this node mounts that folder), and carries each connection made to
them to the daemon over a TLS connection of its own. It holds no key, and reads none of
the bytes it carries (a job's token among them): what reaches the daemon is checked there
as any job's call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from watcherd.relay import wire
from watcherd.util.sockets import bind_unix

log = logging.getLogger("watcherd.relay")

BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)  # between tries to reach the daemon, then the last


class Relay:
    def __init__(
        self, address: tuple[str, int], context: ssl.SSLContext, sockets_dir: Path,
        node: str | None = None,
    ) -> None:  # fmt: skip
        self.address = address
        self.context = context
        self.sockets_dir = sockets_dir
        self.node = node or socket.gethostname()
        self._jobs: dict[str, list[asyncio.Server]] = {}  # job id -> its sockets' servers
        self._connections: dict[str, set[asyncio.StreamWriter]] = {}
        self.failures = 0  # tries in a row that did not reach the daemon

    async def run(self) -> None:
        """Serve until cancelled: reconnect whenever the daemon goes (its jobs' sockets
        stay meanwhile, and the daemon's list puts them right when it is back)."""
        self.sockets_dir.mkdir(mode=wire.SOCKETS_DIR_MODE, parents=True, exist_ok=True)
        try:
            while True:
                try:
                    await self._control()
                except (OSError, ssl.SSLError, wire.WireError) as exc:
                    log.warning("relay: the daemon at %s:%d: %s", *self.address, exc)
                await asyncio.sleep(BACKOFF[min(self.failures, len(BACKOFF) - 1)])
                self.failures += 1
        finally:  # its folders stay: a running task has one mounted, and a relay started
            for servers in self._jobs.values():  # again binds its sockets there anew
                for server in servers:
                    server.close()
            for writers in self._connections.values():
                for writer in list(writers):
                    writer.close()

    async def _control(self) -> None:
        reader, writer = await self._connect()
        try:
            writer.write(wire.encode(hello=self.node))
            await writer.drain()
            self.failures = 0
            log.info("relay: connected to the daemon at %s:%d", *self.address)
            while True:
                message = await wire.read_message(reader)
                if "serve" in message:
                    await self._reconcile(message["serve"])
                elif "open" in message:
                    job_id = wire.job_id_of(message, "open")
                    await self._serve(job_id)
                    writer.write(wire.encode(ready=job_id))
                    await writer.drain()
                elif "close" in message:
                    await self._withdraw(wire.job_id_of(message, "close"))
        finally:
            await wire.close(writer)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        connecting = asyncio.open_connection(
            *self.address, ssl=self.context, limit=wire.STREAM_LIMIT
        )
        return await asyncio.wait_for(connecting, 30)

    async def _reconcile(self, ids: object) -> None:
        if not isinstance(ids, list):
            raise wire.WireError("serve: not a list")
        wanted = {wire.job_id_of({"id": job_id}, "id") for job_id in ids}
        for job_id in set(self._jobs) - wanted:
            await self._withdraw(job_id)
        for folder in self.sockets_dir.iterdir():  # left by a relay before this one
            if folder.name not in wanted and folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)
        for job_id in wanted - set(self._jobs):
            await self._serve(job_id)

    async def _serve(self, job_id: str) -> None:
        if job_id in self._jobs:
            return
        folder = self.sockets_dir / job_id
        if folder.is_symlink():
            return  # the daemon's own node: it serves its jobs there itself
        folder.mkdir(mode=0o755, exist_ok=True)  # one left by a relay before: used again
        servers = []
        for name in wire.SOCKET_NAMES:
            handler = self._handler(job_id, name)
            servers.append(await asyncio.start_unix_server(
                handler, sock=bind_unix(folder / name), limit=wire.STREAM_LIMIT
            ))  # fmt: skip
        self._jobs[job_id] = servers
        log.info("relay: serving job %s", job_id)

    async def _withdraw(self, job_id: str) -> None:
        servers = self._jobs.pop(job_id, None)
        if servers is None:
            return
        for server in servers:
            server.close()
        writers = self._connections.pop(job_id, set())
        await asyncio.gather(*(wire.close(writer) for writer in writers))
        folder = self.sockets_dir / job_id
        if not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
        log.info("relay: job %s withdrawn", job_id)

    def _handler(
        self, job_id: str, name: str
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections = self._connections.setdefault(job_id, set())
            if len(connections) >= wire.MAX_CONNECTIONS:
                await wire.close(writer)
                return
            connections.add(writer)
            try:
                daemon = await self._connect()
                daemon[1].write(wire.encode(connect=job_id, socket=name))
                await wire.splice((reader, writer), daemon)
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                log.warning("relay: job %s: the daemon could not be reached (%s)", job_id, exc)
            finally:
                connections.discard(writer)
                await wire.close(writer)

        return carry


def run_relay(address: tuple[str, int], context: ssl.SSLContext, sockets_dir: Path) -> None:
    """Run a relay in the foreground until SIGTERM or SIGINT."""
    os.umask(0o022)
    relay = Relay(address, context, sockets_dir)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_until_signalled(relay.run()))


async def _until_signalled(main: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
