"""The daemon's end of the relays: every job the gateway serves, served on every node.

On its own node the daemon links ``<sockets_dir>/<id>`` to the job's sockets (a Swarm
task mounts that path wherever it runs). Relays on other nodes, once they prove they hold
the credential, are told each job as it starts and ends, make the same folder there, and
bring each connection a job makes back here, to that job's own socket, where the gateway
checks its token as for any local job. A job is told to the relays before its task exists,
and the daemon waits (briefly) for each to say its sockets are ready: a node without them
would reject the task's mount.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import threading
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from watcherd.relay import wire
from watcherd.relay.credential import ensure_credential, server_context

log = logging.getLogger("watcherd.relay")

READY_SECONDS = 5.0  # for the relays to make a job's sockets before its task is made
T = TypeVar("T")


class _Relay:
    """One relay's control connection."""

    def __init__(self, node: str, peer: str, writer: asyncio.StreamWriter) -> None:
        self.node, self.peer, self.writer = node, peer, writer
        self.waiting: dict[str, asyncio.Future[None]] = {}

    def tell(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)


class Hub:
    def __init__(
        self, sockets_dir: Path, listen: tuple[str, int] | None = None,
        credential: Path | None = None, ready_seconds: float = READY_SECONDS,
    ) -> None:  # fmt: skip
        self.sockets_dir = sockets_dir
        self.listen = listen
        self.credential = credential  # made at the first start when there is none
        self._context: ssl.SSLContext | None = None
        self.ready_seconds = ready_seconds
        # Job id -> the folder of its sockets; None: a job a task may still be running for
        # that this daemon has not opened again yet (after a restart), kept by the relays.
        self._served: dict[str, Path | None] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._relays: set[_Relay] = set()
        self._streams: dict[str, set[asyncio.StreamWriter]] = {}

    # -- the daemon's threads ------------------------------------------------------------

    def start(self) -> None:
        """Make the links' folder; listen for relays if there is an address. Raises
        CredentialError or OSError (an address in use) for the daemon to report."""
        self.sockets_dir.mkdir(mode=wire.SOCKETS_DIR_MODE, parents=True, exist_ok=True)
        if self.listen is None or self._loop is not None:
            return
        assert self.credential is not None
        self._context = server_context(ensure_credential(self.credential))
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="relay-hub", daemon=True).start()
        self._loop = loop
        self._call(self._listen())
        log.info("relays: listening on %s:%d", *self.listen)

    def stop(self) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop = None

    def keep(self, job_ids: Iterable[str]) -> None:
        """Jobs whose tasks may run on (after a restart, before their lives open them
        again): a relay that connects meanwhile keeps their folders, which a running task
        has mounted and would not see made anew. Each ends with ``withdraw``."""
        with self._lock:
            for job_id in job_ids:
                self._served.setdefault(job_id, None)

    def link(self, job_id: str) -> Path:
        """Where a job's task finds its sockets, on whichever node it runs."""
        return self.sockets_dir / job_id

    def serve(self, job_id: str, folder: Path) -> None:
        """Serve the job's sockets (in ``folder``) wherever its task will run."""
        link = self.link(job_id)
        with self._lock:
            self._served[job_id] = folder
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        os.symlink(folder, link)
        if self._loop is not None:
            self._call(self._announce(job_id))

    def withdraw(self, job_id: str) -> None:
        with self._lock:
            if job_id not in self._served:
                return
            del self._served[job_id]
        with contextlib.suppress(FileNotFoundError):
            self.link(job_id).unlink()
        if self._loop is not None:
            self._call(self._withdraw(job_id))

    @property
    def address(self) -> tuple[str, int] | None:
        """Where it listens (the port the system gave, for ``listen`` port 0)."""
        if self._server is None or not self._server.sockets:
            return None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    def relays(self) -> list[str]:
        """The nodes whose relays are connected."""
        if self._loop is None:
            return []
        return self._call(self._nodes())

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    # -- on the loop ---------------------------------------------------------------------

    async def _listen(self) -> None:
        assert self.listen is not None
        self._server = await asyncio.start_server(
            self._on_connection, *self.listen, ssl=self._context, ssl_handshake_timeout=10,
            limit=wire.STREAM_LIMIT,
        )  # fmt: skip

    async def _nodes(self) -> list[str]:
        return sorted(relay.node for relay in self._relays)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        writers = [relay.writer for relay in self._relays]
        writers += [writer for job in self._streams.values() for writer in job]
        await asyncio.gather(*(wire.close(writer) for writer in writers))

    async def _announce(self, job_id: str) -> None:
        waiting = []
        for relay in list(self._relays):
            future = relay.waiting[job_id] = asyncio.get_running_loop().create_future()
            relay.tell(wire.encode(open=job_id))
            waiting.append(future)
        if not waiting:
            return
        _, late = await asyncio.wait(waiting, timeout=self.ready_seconds)
        for relay in self._relays:
            if relay.waiting.pop(job_id, None) in late:
                log.warning("job %s: the relay on %s did not make its sockets within %gs; a "
                            "task placed there fails to start", job_id, relay.node,
                            self.ready_seconds)  # fmt: skip

    async def _withdraw(self, job_id: str) -> None:
        for relay in list(self._relays):
            relay.tell(wire.encode(close=job_id))
        writers = self._streams.pop(job_id, set())
        await asyncio.gather(*(wire.close(writer) for writer in writers))

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = str(writer.get_extra_info("peername"))
        try:
            first = await wire.read_message(reader, wire.FIRST_LINE_SECONDS)
            if "hello" in first:
                await self._control(str(first["hello"])[:100], peer, reader, writer)
            elif "connect" in first:
                await self._stream(first, reader, writer)
            else:
                raise wire.WireError("neither hello nor connect")
        except wire.WireError as exc:
            log.warning("relay connection from %s refused: %s", peer, exc)
        except (OSError, ConnectionError):
            pass
        finally:
            await wire.close(writer)

    async def _control(
        self, node: str, peer: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        relay = _Relay(node, peer, writer)
        self._relays.add(relay)
        log.info("relays: %s (%s) connected", node, peer)
        try:
            with self._lock:
                served = sorted(self._served)
            relay.tell(wire.encode(serve=served))
            while True:
                message = await wire.read_message(reader)
                job_id = wire.job_id_of(message, "ready")
                future = relay.waiting.get(job_id)
                if future is not None and not future.done():
                    future.set_result(None)
        except wire.WireError:
            pass
        finally:
            self._relays.discard(relay)
            log.info("relays: %s (%s) gone", node, peer)

    async def _stream(
        self, first: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        job_id = wire.job_id_of(first, "connect")
        name = first.get("socket")
        if name not in wire.SOCKET_NAMES:
            raise wire.WireError(f"socket: not one of {', '.join(wire.SOCKET_NAMES)}")
        with self._lock:
            served = self._served.get(job_id) is not None
        if not served:
            raise wire.WireError(f"job {job_id} is not served")
        streams = self._streams.setdefault(job_id, set())
        if len(streams) >= 2 * wire.MAX_CONNECTIONS:  # two ends each
            raise wire.WireError(f"job {job_id}: over {wire.MAX_CONNECTIONS} connections")
        try:  # through its link: a short path, whatever the work root's
            local = await asyncio.open_unix_connection(
                str(self.link(job_id) / name), limit=wire.STREAM_LIMIT
            )
        except OSError:
            return  # its egress socket when it has no egress: refused as on its node
        streams.update((writer, local[1]))
        try:
            await wire.splice((reader, writer), local)
        finally:
            streams.difference_update((writer, local[1]))
            if not streams and self._streams.get(job_id) is streams:
                del self._streams[job_id]
