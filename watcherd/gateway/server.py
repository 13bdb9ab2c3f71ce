"""The model gateway: the daemon's side of every job's model traffic, and the only holder of
the keys.

Each running job gets its own unix socket (``<root>/run/<id>/model.sock``, mounted into its
container, where a forwarder turns it into ``127.0.0.1:MODEL_PORT``) and a token in place
of a key. A request is forwarded only when it came on its job's socket, carries that job's
token, asks for a method and path its API allows, names no provider-side network tool the
operator did not allow, and the job is within its token budget. Then every credential the
client sent is dropped, the operator's key is added, and the response streams back unbuffered
while its usage is counted. Every call (and every refusal) is a line in the job's audit file.

All of it runs on one asyncio loop in a thread of its own; the daemon's threads call
``open``/``close`` and read grants, which are thread-safe. On Swarm, relays serve the same
sockets on the node a job's task runs on (watcherd.relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

from watcherd.gateway.apis import APIS, network_tool
from watcherd.gateway.egress import EgressPolicy, EgressProxy
from watcherd.gateway.grants import Grant, Spent, Upstream
from watcherd.gateway.meter import Meter
from watcherd.util.sockets import bind_unix

log = logging.getLogger("watcherd.gateway")

MODEL_SOCKET = "model.sock"
EGRESS_SOCKET = "egress.sock"
MAX_HEADER_LINE = 8190
BODY_TIMEOUT = 120.0  # a client that sends its body slower than this is cut off
# Calls of one job under way at once: agents make a few (subagents in parallel); a job that
# opens more would only hold the daemon's memory (a relayed answer can hold some MiB).
MAX_CALLS_AT_ONCE = 32
# A response is relayed in batches as big as these allow: the fewer, the less CPU a byte
# costs each of the three processes it crosses (upstream, gateway, agent). The upstream's
# bytes read but not yet relayed (aiohttp stops reading at twice this):
UPSTREAM_READ_BUFFER = 256 * 1024
# The job's socket, relayed but not yet read (a unix socket's default is 208 KiB; the
# kernel doubles this). Either is only filled by a big response its agent reads slowly.
JOB_SEND_BUFFER = 1024 * 1024

# Never forwarded, in either direction: the connection's own, and every credential.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
    "upgrade", "host", "content-length", "accept-encoding", "expect",
})  # fmt: skip
_CREDENTIALS = frozenset({
    "authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key",
    "cookie", "openai-organization", "openai-project", "x-goog-user-project",
})  # fmt: skip
_RESPONSE_DROP = frozenset({"content-encoding", "set-cookie"}) | _HOP_BY_HOP
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})

T = TypeVar("T")


class Relays(Protocol):
    """What serves a job's sockets on other nodes too (watcherd.relay.hub.Hub)."""

    def link(self, job_id: str) -> Path: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def keep(self, job_ids: Iterable[str]) -> None: ...
    def serve(self, job_id: str, folder: Path) -> None: ...
    def withdraw(self, job_id: str) -> None: ...


@dataclass
class _Served:
    """One job at the gateway: its grant, its socket's server, its calls under way."""

    grant: Grant
    runner: web.AppRunner | None = None
    requests: set[asyncio.Task[Any]] = field(default_factory=set)
    proxy: EgressProxy | None = None
    path: Path | None = None  # its model socket


class Gateway:
    def __init__(
        self, *, max_body: int = 64 * 1024 * 1024, connect_timeout: float = 30.0,
        body_timeout: float = BODY_TIMEOUT, max_calls: int = MAX_CALLS_AT_ONCE,
        relays: Relays | None = None,
    ) -> None:  # fmt: skip
        self.max_body = max_body
        self.relays = relays
        self.max_calls = max_calls
        self.connect_timeout = connect_timeout
        self.body_timeout = body_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gateway", daemon=True)
        self._jobs: dict[str, _Served] = {}  # job id -> what serves it
        self._session: aiohttp.ClientSession | None = None
        self._lock = threading.Lock()

    # -- lifecycle (the daemon's threads) ------------------------------------------------

    def start(self) -> None:
        """Start the loop (``open`` does it when it has not been)."""
        self._thread.start()
        self._call(self._start())
        if self.relays is not None:
            self.relays.start()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        for job_id in list(self._jobs):
            self.close(job_id)
        self._call(self._stop())
        if self.relays is not None:
            self.relays.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def open(self, grant: Grant, folder: Path, egress: EgressPolicy | None = None) -> Path:
        """Serve ``grant`` on a new socket in ``folder`` (and its egress allowlists on
        another, EGRESS_SOCKET); returns the model socket's path. A grant the job already
        had (an attempt before, an earlier daemon) is replaced."""
        with self._lock:
            if not self._thread.is_alive():
                self.start()
        self.close(grant.job_id)
        path = folder / MODEL_SOCKET
        self._call(self._open(grant, path, folder / EGRESS_SOCKET, egress))
        if self.relays is not None:
            self.relays.serve(grant.job_id, folder)
        return path

    def mount_source(self, job_id: str, folder: Path) -> Path:
        """The folder a job's container mounts to reach its sockets in ``folder``: on
        Swarm, a node-local path each node's relay serves."""
        return self.relays.link(job_id) if self.relays is not None else folder

    def close(self, job_id: str) -> Spent | None:
        """Stop serving a job: its sockets go, its calls under way are cut, its token is
        good nowhere. Returns what it spent (None if it had no grant)."""
        with self._lock:
            served = self._jobs.pop(job_id, None)
        if self.relays is not None:
            self.relays.withdraw(job_id)
        if served is None:
            return None
        served.grant.closed = True
        self._call(self._close(served))
        grant = served.grant
        return Spent(grant.used.input, grant.used.output, grant.calls, grant.refused,
                     grant.over_budget)  # fmt: skip

    def grant(self, job_id: str) -> Grant | None:
        with self._lock:
            served = self._jobs.get(job_id)
        return served.grant if served is not None else None

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    # -- on the loop ---------------------------------------------------------------------

    async def _start(self) -> None:
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.connect_timeout, sock_connect=self.connect_timeout,
            sock_read=None,  # a model may think for minutes between two events
        )  # fmt: skip
        self._session = aiohttp.ClientSession(
            timeout=timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # the operator's upstream, never a proxy from the environment
            read_bufsize=UPSTREAM_READ_BUFFER,
        )  # fmt: skip

    async def _stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _open(
        self, grant: Grant, path: Path, egress_path: Path, egress: EgressPolicy | None
    ) -> None:
        served = _Served(grant, path=path)
        app = web.Application(client_max_size=self.max_body)
        app.router.add_route("*", "/{tail:.*}", functools.partial(self._handle, served))
        served.runner = web.AppRunner(
            app, access_log=None, max_line_size=MAX_HEADER_LINE, max_field_size=MAX_HEADER_LINE,
            max_headers=64, auto_decompress=False,  # a compressed body is refused, not unpacked
            shutdown_timeout=1.0,
        )  # fmt: skip
        await served.runner.setup()
        await web.SockSite(served.runner, bind_unix(path)).start()
        with contextlib.suppress(FileNotFoundError):
            egress_path.unlink()
        if egress is not None:
            served.proxy = EgressProxy(egress, audit=grant.audit)
            await served.proxy.start(egress_path)
        with self._lock:
            self._jobs[grant.job_id] = served

    async def _close(self, served: _Served) -> None:
        for task in list(served.requests):
            task.cancel()
        if served.runner is not None:
            await served.runner.cleanup()
        if served.path is not None:
            with contextlib.suppress(FileNotFoundError):
                served.path.unlink()
        if served.proxy is not None:
            await served.proxy.close()

    # -- one request ---------------------------------------------------------------------

    async def _handle(self, served: _Served, request: web.Request) -> web.StreamResponse:
        grant = served.grant
        if grant.closed:
            return _error(403, "this socket serves no running job")
        crowded = len(served.requests) >= self.max_calls
        task = asyncio.current_task()
        if task is not None and not crowded:
            served.requests.add(task)
        started = time.monotonic()
        record: dict[str, Any] = {"kind": "model", "method": request.method}
        response: web.StreamResponse
        try:
            if crowded:
                record["path"] = request.raw_path[:200]
                response = _refuse(record, 429, f"more than {self.max_calls} calls at once")
            else:
                response = await self._forward(request, grant, record)
        except asyncio.CancelledError:
            record.update(status=499, refused="the job ended")
            raise
        finally:
            if task is not None:
                served.requests.discard(task)
            record["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
            if "refused" in record:
                grant.refused += 1
            with contextlib.suppress(OSError):
                grant.audit(record)
        return response

    async def _forward(
        self, request: web.Request, grant: Grant, record: dict[str, Any]
    ) -> web.StreamResponse:
        path, problem = _checked_path(request)
        record["path"] = path
        if problem:
            return _refuse(record, 400, problem)
        if request.host.rsplit(":", 1)[0] not in _LOOPBACK_HOSTS:
            return _refuse(record, 400, f"Host {request.host!r} is not this gateway")
        prefix, _, rest = path.partition("/")
        upstream = grant.upstreams.get(prefix)
        if upstream is None:
            return _refuse(record, 404, f"no upstream at /{prefix}")
        api = APIS[upstream.api]
        if not api.allows(request.method, rest):
            return _refuse(record, 403, f"{request.method} /{rest} is not a call this agent needs")
        if upstream.key is not None and not _presents(request, grant.token):
            return _refuse(record, 401, "missing or wrong job token")
        if grant.over_budget:
            return _refuse(record, 429, "token budget exceeded")
        try:
            body = await asyncio.wait_for(request.read(), self.body_timeout)
        except TimeoutError:
            return _refuse(record, 408, "request body too slow")
        except web.HTTPRequestEntityTooLarge:
            return _refuse(record, 413, f"request body over {self.max_body} bytes")
        body, refusal = _checked_body(body, request, grant, api.ask_for_usage)
        if refusal:
            return _refuse(record, *refusal)
        record["bytes_up"] = len(body)
        return await self._relay(request, upstream, rest, body, grant, record)

    async def _relay(
        self, request: web.Request, upstream: Upstream, rest: str, body: bytes, grant: Grant,
        record: dict[str, Any],
    ) -> web.StreamResponse:  # fmt: skip
        assert self._session is not None
        api, base_url, key = APIS[upstream.api], upstream.base_url, upstream.key
        query = [(k, v) for k, v in parse_qsl(request.query_string, keep_blank_values=True)
                 if k != "key"]  # fmt: skip
        url = f"{base_url}/{rest}" if rest else base_url
        if query:
            url += "?" + urlencode(query)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        if key is not None:
            headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIALS}
            headers.update(api.key_headers(key))
        if upstream.headers:
            fixed = {name.lower() for name in upstream.headers}
            headers = {k: v for k, v in headers.items() if k.lower() not in fixed}
            headers.update(upstream.headers)
        headers["Accept-Encoding"] = "identity"  # usage is read from the bytes going by
        try:
            answer = await self._session.request(
                request.method, url, data=body, headers=headers, allow_redirects=False
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            record.update(status=502, error=type(exc).__name__)
            return _error(502, f"the upstream could not be reached ({type(exc).__name__})")
        async with answer:
            response = web.StreamResponse(status=answer.status, reason=answer.reason)
            for name, value in answer.headers.items():
                if name.lower() not in _RESPONSE_DROP:
                    response.headers.add(name, value)
            streamed = answer.content_type == "text/event-stream"
            meter = Meter(api.usage, streamed=streamed)
            _send_buffer(request, JOB_SEND_BUFFER)
            await response.prepare(request)
            received = 0
            try:
                async for chunk in answer.content.iter_any():
                    received += len(chunk)
                    meter.feed(chunk)
                    await response.write(chunk)
            finally:
                tokens = meter.finish()
                grant.spend(tokens)
                record.update(status=answer.status, bytes_down=received,
                              input_tokens=tokens.input, output_tokens=tokens.output)  # fmt: skip
            await response.write_eof()
            return response


def _send_buffer(request: web.Request, size: int) -> None:
    """Let the job's connection hold ``size`` bytes on their way to the agent."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and sock.family == socket.AF_UNIX:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def _checked_path(request: web.Request) -> tuple[str, str | None]:
    """The path below the gateway (no leading slash), or why it is refused: only a plain
    origin-form path, no encoding, no dot segments, no empty segments."""
    path = request.raw_path.split("?", 1)[0]
    if not path.startswith("/") or "://" in path:
        return path, "only origin-form request targets (/path) are served"
    for bad, why in (("%", "encoded characters"), ("\\", "backslashes"), ("//", "empty segments")):
        if bad in path:
            return path, f"paths with {why} are refused"
    segments = path[1:].split("/")
    if any(s in (".", "..") for s in segments):
        return path, "paths with dot segments are refused"
    return path[1:], None


def _presents(request: web.Request, token: str) -> bool:
    """Whether the request carries the job's token where its API puts a key."""
    offered = _offered_credentials(request)
    return any(hmac.compare_digest(value.encode(), token.encode()) for value in offered)


def _offered_credentials(request: web.Request) -> Iterable[str]:
    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        yield authorization[7:].strip()
    for name in ("x-api-key", "x-goog-api-key", "api-key"):
        if name in request.headers:
            yield request.headers[name].strip()
    if "key" in request.query:
        yield request.query["key"]


def _checked_body(
    body: bytes, request: web.Request, grant: Grant, ask_for_usage: Any
) -> tuple[bytes, tuple[int, str] | None]:
    """The body to send on (with usage asked for), or the status and reason to refuse it."""
    if not body:
        return body, None
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        return body, (400, "compressed request bodies are not forwarded (the gateway reads "
                           "each one)")  # fmt: skip
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return body, (400, "the request body is not JSON")
    if not grant.allow_network_tools:
        found = network_tool(document)
        if found:
            return body, (403, f"{found} asks the provider to reach the network; not allowed "
                               "for this job")  # fmt: skip
    if isinstance(document, dict):
        before = dict(document)
        ask_for_usage(document)
        if document != before:
            body = json.dumps(document, separators=(",", ":")).encode()
    return body, None


def _refuse(record: dict[str, Any], status: int, reason: str) -> web.Response:
    record.update(status=status, refused=reason)
    return _error(status, reason)


def _error(status: int, reason: str) -> web.Response:
    body = {"error": {"message": f"watcherd gateway: {reason}", "type": "gateway_refusal"}}
    return web.json_response(body, status=status)
