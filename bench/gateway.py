"""Section "gateway": a streamed model response through the daemon's model gateway
(watcherd/gateway/server.py) beside the same response straight from the upstream, in one
run, the paths alternated call by call so that the machine's load falls on each alike.

All of it on 127.0.0.1 or unix sockets in a scratch folder; nothing else is contacted:

- the upstream, ``python -m bench.gateway upstream``: a small aiohttp provider answering
  ``POST /v1/responses`` with an SSE stream shaped by the request's ``bench`` field (how
  many delta events, how big, how far apart), its first event at once and a
  ``response.completed`` with usage last;
- the gateway, ``python -m bench.gateway gateway URL FOLDER N``: the real ``Gateway`` with N
  grants (N jobs, API openai-responses, an operator key, an audit file each), in a process
  of its own as it is in the daemon's;
- the forwarder: ``socat TCP-LISTEN:0,bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:SOCK``, as
  image/entrypoint.sh starts it in a job's container (left out when socat is missing);
- a relay (``watcherd relay``, a process of its own) in front of the gateway's hub (in the
  gateway's process, as in the daemon's): the path of a Swarm job on another node, over
  TLS on 127.0.0.1 (no network between nodes is timed);
- the client, here: HTTP/1.1 on a plain kept-alive socket, de-chunked by hand, as cheap on
  every path so that the differences are the gateway's (and the forwarder's).

Both helper processes stop by themselves when their stdin closes (this process is done or
gone), or after an hour whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import docker

from bench.common import CHECKOUT, ProcStat, log, reap, scratch, wait_for
from bench.report import Figure, Report, percentile

SECTION = "8 gateway"
KEY = "sk-bench-operator-key"  # the operator's key in each grant (the upstream ignores it)
HOST = "127.0.0.1:48080"  # the Host an agent sends: MODEL_PORT on its container's loopback
LIFETIME = 3600.0  # a helper left behind stops by itself after this
EVENT_SIZE = 16 * 1024  # the throughput response's events
TICK = 0.05  # the concurrent streams: one event every 50 ms
WARM_UP = 5  # calls on each path before the first-byte samples
RECV = 256 * 1024
WHERE = {"gateway": "unix socket", "gateway+socat": "through socat",
         "gateway+relay": "through a relay, TLS"}  # fmt: skip
NODELAY = "gateway+socat nodelay"  # the forwarder with TCP_NODELAY, when the image's has not


@dataclass(frozen=True)
class Plan:
    calls: int  # time-to-first-byte calls on each path
    stream_mib: int  # the throughput response
    repeats: int  # throughput calls on each path
    streams: int  # concurrent streams, one job (grant, socket) each
    seconds: float  # how long each concurrent stream lasts
    rounds: int  # concurrent rounds on each side (gateway, direct), alternated
    forwarder: bool = True  # also through socat


QUICK = Plan(calls=40, stream_mib=16, repeats=3, streams=20, seconds=2.0, rounds=1)
FULL = Plan(calls=200, stream_mib=64, repeats=5, streams=20, seconds=5.0, rounds=2)

# A Responses request as Codex sends one, shortened (some 6 KB): the gateway reads every
# body (JSON, network tools), so its size is part of the added time.
REQUEST: dict[str, Any] = {
    "model": "bench-model",
    "stream": True,
    "store": False,
    "instructions": "You are a coding agent working in a git checkout. " * 20,
    "input": [
        {
            "type": "message",
            "role": "user" if n % 2 == 0 else "assistant",
            "content": [{"type": "input_text", "text": f"Step {n}: " + "read it, then fix. " * 18}],
        }
        for n in range(12)
    ],
    "tools": [
        {
            "type": "function",
            "name": name,
            "description": f"The {name} tool.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "text": {"type": "string"}},
                "required": ["path"],
            },
        }
        for name in ("shell", "apply_patch", "read_file", "list_dir")
    ],
}


def request_body(events: int = 0, size: int = 0, every: float = 0.0) -> bytes:
    """The request; ``bench`` tells the upstream what to stream back."""
    shape = {"events": events, "size": size, "every": every}
    return json.dumps({**REQUEST, "bench": shape}, separators=(",", ":")).encode()


# -- the section -------------------------------------------------------------------------


def run(report: Report, quick: bool, image: str, docker_client: docker.DockerClient) -> None:
    plan = QUICK if quick else FULL
    if plan.forwarder and shutil.which("socat") is None:
        report.notes.append("gateway: no socat here, so no figures through the forwarder")
        plan = replace(plan, forwarder=False)
    with scratch("gateway") as base:
        measured = measure(base, plan)
    report.details["gateway"] = measured.details()
    for figure in figures(plan, measured):
        report.add(figure)
    if NODELAY in measured.first_ms:
        with_nodelay = percentile(measured.first_ms[NODELAY], 50) - percentile(
            measured.first_ms["direct"], 50
        )
        report.notes.append(
            f"gateway: the forwarder as image/entrypoint.sh starts it (socat TCP-LISTEN options "
            f"{measured.forwarder}) has no nodelay; with nodelay the same path adds "
            f"{with_nodelay:.2f} ms to the first event at p50"
        )


@dataclass
class Measured:
    first_ms: dict[str, list[float]]  # path -> time to the first event, per call
    rates: dict[str, list[float]]  # path -> MB/s, per call
    rounds: dict[str, list[Round]]  # "gateway" / "direct" -> concurrent rounds
    forwarder: str  # socat's listening options, as image/entrypoint.sh has them
    gateway_cpu_ms_per_mib: float  # the gateway process's CPU while streaming

    def details(self) -> dict[str, Any]:
        return {
            "first_event_ms": {p: _summary(v) for p, v in self.first_ms.items()},
            "first_event_paired_added_ms": {
                p: _summary(self.paired(p)) for p in self.first_ms if p != "direct"
            },
            "throughput_mb_s": self.rates,
            "gateway_cpu_ms_per_mib": self.gateway_cpu_ms_per_mib,
            "forwarder": f"socat TCP-LISTEN:PORT,{self.forwarder} UNIX-CONNECT:SOCK",
            "concurrent": {
                side: [asdict(r) for r in rounds] for side, rounds in self.rounds.items()
            },
        }

    def paired(self, path: str) -> list[float]:
        """Each call's time minus the direct call's next to it."""
        return [a - b for a, b in zip(self.first_ms[path], self.first_ms["direct"], strict=True)]


def measure(base: Path, plan: Plan) -> Measured:
    with contextlib.ExitStack() as stack:
        _, port = stack.enter_context(_helper(base, "upstream"))
        upstream = f"http://127.0.0.1:{port}"
        gateway_pid, jobs = stack.enter_context(
            _helper(base, "gateway", upstream, str(base), str(plan.streams))
        )
        log(f"gateway: upstream at {upstream}, {len(jobs)} jobs at the gateway")
        paths = {
            "direct": Http(("127.0.0.1", port), "/v1/responses", "sk-direct-" + "x" * 39),
            "gateway": Http(jobs[0]["socket"], "/m0/responses", jobs[0]["token"]),
        }
        options = forwarder_options() if plan.forwarder else ""
        if plan.forwarder:
            forwarded = stack.enter_context(_forwarder(jobs[0]["socket"], options, base))
            paths["gateway+socat"] = Http(forwarded, "/m0/responses", jobs[0]["token"])
        relayed = stack.enter_context(_relay(jobs[0], base))
        paths["gateway+relay"] = Http(relayed, "/m0/responses", jobs[0]["token"])
        first_paths = dict(paths)
        if plan.forwarder and "nodelay" not in options.split(","):
            # The image's forwarder writes to the agent's TCP socket with Nagle on: how the
            # same path does with it off, beside it (time to the first event only).
            nodelay = stack.enter_context(_forwarder(jobs[0]["socket"], options + ",nodelay", base))
            first_paths[NODELAY] = Http(nodelay, "/m0/responses", jobs[0]["token"])
        for http in first_paths.values():
            stack.callback(http.close)
        first_ms = _first_event(first_paths, plan.calls)
        before = ProcStat.read(gateway_pid).cpu
        rates, sizes = _throughput(paths, plan.stream_mib, plan.repeats)
        gateway_cpu = ProcStat.read(gateway_pid).cpu - before
        through = sum(sizes[name] for name in paths if name != "direct")
        rounds: dict[str, list[Round]] = {"gateway": [], "direct": []}
        events = round(plan.seconds / TICK)
        for _ in range(plan.rounds):
            targets = [Http(j["socket"], "/m0/responses", j["token"]) for j in jobs]
            rounds["gateway"].append(_concurrent(targets, events))
            targets = [Http(("127.0.0.1", port), "/v1/responses", "sk-direct") for _ in jobs]
            rounds["direct"].append(_concurrent(targets, events))
        return Measured(first_ms, rates, rounds, options, gateway_cpu * 1000 / (through / 2**20))


def figures(plan: Plan, m: Measured) -> list[Figure]:
    out = []
    direct = m.first_ms["direct"]
    for path, where in WHERE.items():
        if path not in m.first_ms:
            continue
        samples = m.first_ms[path]
        paired = percentile(m.paired(path), 50)
        for q in (50, 95):
            added = percentile(samples, q) - percentile(direct, q)
            out.append(
                Figure(
                    SECTION,
                    f"first event p{q}, added by the gateway ({where})",
                    added,
                    "ms",
                    floor=percentile(direct, q),
                    floor_what="direct",
                    goal=2.0 if q == 50 else None,
                    note=f"{len(samples)} calls, {len(request_body()) / 1000:.1f} KB request"
                    + (f"; median of paired differences {paired:.2f} ms" if q == 50 else ""),
                )
            )
    floor = statistics.median(m.rates["direct"])
    for path, where in WHERE.items():
        if path not in m.rates:
            continue
        rate = statistics.median(m.rates[path])
        out.append(
            Figure(
                SECTION,
                f"{plan.stream_mib} MiB streamed in 16 KiB events ({where})",
                rate,
                "MB/s",
                floor=floor,
                floor_what="direct",
                goal=0.9 * floor,
                goal_op=">=",
                goal_what=">= 90 % of direct",
                note=f"{rate / floor * 100:.0f} % of direct, median of {len(m.rates[path])}; "
                f"gateway CPU {m.gateway_cpu_ms_per_mib:.1f} ms/MiB",
            )
        )
    gateway, direct_rounds = m.rounds["gateway"], m.rounds["direct"]
    what = f"{plan.streams} streams at once, one job each, {plan.seconds:g} s of events every 50 ms"
    out.append(
        Figure(
            SECTION,
            f"{plan.streams} concurrent streams, all completed",
            min(r.completed for r in gateway),
            "streams",
            floor=min(r.completed for r in direct_rounds),
            floor_what="direct",
            goal=float(plan.streams),
            goal_op=">=",
            goal_what=f"{plan.streams} of {plan.streams}",
            note=f"{what}; worst of {len(gateway)} round(s)",
        )
    )
    out.append(
        Figure(
            SECTION,
            f"{plan.streams} concurrent streams, max gap between events",
            max(r.max_gap_ms for r in gateway),
            "ms",
            floor=max(r.max_gap_ms for r in direct_rounds),
            floor_what="direct",
            goal=500.0,
            goal_op="<",
            note=f"p99 gap {max(r.p99_gap_ms for r in gateway):.0f} ms; {what}",
        )
    )
    return out


def _rotated(items: Sequence[Any], n: int) -> list[Any]:
    """Each path first in turn: none always has the warm cache, or the cold one."""
    n %= len(items)
    return [*items[n:], *items[:n]]


def _first_event(paths: dict[str, Http], calls: int) -> dict[str, list[float]]:
    body = request_body()
    for http in paths.values():
        for _ in range(WARM_UP):
            http.call(body)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for n in range(calls):
        for name in _rotated(list(paths), n):
            call = paths[name].call(body)
            if not call.completed or not call.first:
                raise RuntimeError(f"{name}: not a whole answer: {call.status} {call.tail!r}")
            samples[name].append((call.first - call.sent) / 1e6)
    return samples


def _throughput(
    paths: dict[str, Http], mib: int, repeats: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """MB/s of each call on each path, and the bytes each path carried."""
    events = mib * 1024 * 1024 // EVENT_SIZE
    body = request_body(events, EVENT_SIZE)
    rates: dict[str, list[float]] = {name: [] for name in paths}
    sizes = dict.fromkeys(paths, 0)
    for n in range(repeats):
        for name in _rotated(list(paths), n):
            call = paths[name].call(body)
            if not call.completed or call.size < events * EVENT_SIZE:
                raise RuntimeError(f"{name}: {call.size} bytes of {events * EVENT_SIZE}")
            rates[name].append(call.size / ((call.done - call.sent) / 1e9) / 1e6)
            sizes[name] += call.size
    return rates, sizes


@dataclass
class Round:
    streams: int
    completed: int
    max_gap_ms: float
    p99_gap_ms: float
    errors: list[str]


def _concurrent(targets: list[Http], events: int) -> Round:
    """Every target's one streaming call at once (fresh connections, as a job's first call);
    a stream is complete when all its events and the last came, status 200."""
    body = request_body(events, 200, TICK)
    results: list[Call | BaseException | None] = [None] * len(targets)
    start = threading.Barrier(len(targets))

    def one(n: int) -> None:
        try:
            start.wait(30)
            results[n] = targets[n].call(body, watch=True)
        except Exception as exc:
            results[n] = exc
        finally:
            targets[n].close()

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in range(len(targets))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + events * TICK + 60
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    calls = [r for r in results if isinstance(r, Call)]
    whole = [c for c in calls if c.completed and c.events == events + 2]
    gaps = [g for c in calls for g in c.gaps_ms()]
    errors = [repr(r) for r in results if not isinstance(r, Call)]
    errors += [f"{c.status}: {c.events} events of {events + 2}" for c in calls if c not in whole]
    return Round(
        len(targets), len(whole), max(gaps, default=float("nan")), percentile(gaps, 99), errors
    )


def _summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "max": max(values, default=float("nan"))}  # fmt: skip


# -- the client --------------------------------------------------------------------------


@dataclass
class Call:
    sent: int  # perf_counter_ns as the request went
    status: int = 0
    first: int = 0  # when the first event was whole
    done: int = 0
    size: int = 0  # body bytes
    events: int = 0  # SSE events, when watched
    arrivals: list[int] = field(default_factory=list)  # when body bytes came, when watched
    tail: bytes = b""  # the body's last bytes
    _head: bytearray = field(default_factory=bytearray)

    def body(self, data: bytes | bytearray, at: int, watch: bool) -> None:
        self.size += len(data)
        if not self.first:
            self._head += data
            if b"\n\n" in self._head:
                self.first = at
        if watch:
            self.arrivals.append(at)
            self.events += (self.tail[-1:] + data).count(b"\n\n")
        self.tail = bytes(data[-512:]) if len(data) >= 512 else (self.tail + data)[-512:]

    @property
    def completed(self) -> bool:
        return self.status == 200 and b"response.completed" in self.tail

    def gaps_ms(self) -> list[float]:
        times = [self.sent, *self.arrivals]
        return [(b - a) / 1e6 for a, b in itertools.pairwise(times)]


class Http:
    """HTTP/1.1 on one kept-alive connection (TCP or a unix socket), as an agent's client
    keeps one: a request out, the response de-chunked as it comes, each piece's time."""

    def __init__(self, address: str | tuple[str, int], path: str, token: str) -> None:
        self.address = address
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: "
        ).encode()
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.pos = 0
        self.at = 0  # perf_counter_ns of the last recv

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def call(self, payload: bytes, watch: bool = False) -> Call:
        if self.sock is None:
            family = socket.AF_UNIX if isinstance(self.address, str) else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            if family == socket.AF_INET:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.settimeout(30)
            self.sock.connect(self.address)
            self.buf.clear()
            self.pos = 0
        call = Call(sent=time.perf_counter_ns())
        self.sock.sendall(self.head + b"%d\r\n\r\n" % len(payload) + payload)
        call.status = int(self._line().split(b" ", 2)[1])
        headers = {}
        while line := self._line():
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get(b"transfer-encoding") == b"chunked":
            while size := int(self._line().split(b";", 1)[0], 16):
                call.body(self._take(size), self.at, watch)
                self._take(2)
            while self._line():  # trailers, then the blank line
                pass
        elif length := int(headers.get(b"content-length", b"0")):
            call.body(self._take(length), self.at, watch)
        call.done = time.perf_counter_ns()
        if headers.get(b"connection") == b"close":
            self.close()
        return call

    def _fill(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(RECV)
        self.at = time.perf_counter_ns()
        if not data:
            raise ConnectionError("the connection closed in mid-response")
        if self.pos:
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += data

    def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n", self.pos)) < 0:
            self._fill()
        line = bytes(self.buf[self.pos : end])
        self.pos = end + 2
        return line

    def _take(self, size: int) -> bytearray:
        while len(self.buf) - self.pos < size:
            self._fill()
        data = self.buf[self.pos : self.pos + size]
        self.pos += size
        return data


# -- the helper processes ----------------------------------------------------------------


@contextlib.contextmanager
def _helper(base: Path, *args: str) -> Iterator[tuple[int, Any]]:
    """``python -m bench.gateway ARGS`` in a process of its own; yields its pid and the JSON
    it printed first. It stops when its stdin closes."""
    with (base / f"{args[0]}.log").open("ab") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.gateway", *args],
            cwd=CHECKOUT,
            env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else b""
        if not line:
            tail = (base / f"{args[0]}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the {args[0]} did not start:\n{tail}")
        yield proc.pid, json.loads(line)
    finally:
        proc.stdin.close()
        reap(proc, 15)


def forwarder_options() -> str:
    """socat's TCP-LISTEN options as image/entrypoint.sh starts a job's forwarder, so that
    the benchmark follows the image."""
    script = (CHECKOUT / "image" / "entrypoint.sh").read_text()
    found = re.search(r'socat "TCP-LISTEN:\$port,([^"]*)"', script)
    if found is None:
        raise RuntimeError("no socat TCP-LISTEN forwarder found in image/entrypoint.sh")
    return found.group(1)


@contextlib.contextmanager
def _forwarder(sock: str, options: str, base: Path) -> Iterator[tuple[str, int]]:
    """socat as a job's container runs it (image/entrypoint.sh), on a free port."""
    log_path = base / f"socat-{len(list(base.glob('socat-*.log')))}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            ["socat", "-d", "-d", f"TCP-LISTEN:0,{options}", f"UNIX-CONNECT:{sock}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
            preexec_fn=_die_with_parent,
        )

    def port() -> int:
        if proc.poll() is not None:
            raise RuntimeError(f"socat exited: {log_path.read_text(errors='replace')[-500:]}")
        found = re.search(r"listening on AF=2 127\.0\.0\.1:(\d+)", log_path.read_text())
        return int(found.group(1)) if found else 0

    try:
        yield ("127.0.0.1", wait_for(port, 10, "socat to listen"))
    finally:
        proc.terminate()
        reap(proc, 10)


@contextlib.contextmanager
def _relay(job: dict[str, Any], base: Path) -> Iterator[str]:
    """``watcherd relay`` connected to the gateway's hub; yields the job's socket there."""
    folder = base / "relay"
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcherd", "--root", str(base), "relay", "--connect",
         f"127.0.0.1:{job['relay']}", "--credential", job["credential"], "--sockets-dir",
         str(folder)],
        cwd=CHECKOUT, env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=(base / "relay.log").open("ab"), preexec_fn=_die_with_parent,
    )  # fmt: skip
    sock = folder / job["id"] / "model.sock"
    try:
        wait_for(sock.exists, 30, "the relay's socket")
        yield str(sock)
    finally:
        proc.terminate()
        reap(proc, 10)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the benchmark goes, however it goes."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _until_parent_goes() -> None:
    """Block until stdin closes (the benchmark is done, or gone), or LIFETIME has passed."""
    deadline = time.monotonic() + LIFETIME
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sys.stdin], [], [], left)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            return


def _serve_gateway(upstream: str, folder: Path, count: int) -> None:
    from watcherd.gateway.grants import Grant, Upstream, new_token
    from watcherd.gateway.server import Gateway
    from watcherd.relay.hub import Hub

    hub = Hub(folder / "links", ("127.0.0.1", 0), folder / "relay.pem")
    gateway = Gateway(relays=hub)
    gateway.start()
    assert hub.address is not None
    try:
        jobs = []
        for n in range(count):
            grant = Grant(
                f"bench-{n}",
                new_token(),
                {"m0": Upstream("openai-responses", upstream + "/v1", KEY)},
                audit_path=folder / f"job{n}.audit.jsonl",
            )
            (folder / f"job{n}").mkdir()
            sock = gateway.open(grant, folder / f"job{n}")
            jobs.append(
                {
                    "socket": str(sock),
                    "token": grant.token,
                    "id": grant.job_id,
                    "relay": hub.address[1],
                    "credential": str(hub.credential),
                }
            )
        print(json.dumps(jobs), flush=True)
        _until_parent_goes()
    finally:
        gateway.stop()


async def _serve_upstream() -> None:
    from aiohttp import web

    async def answer(request: web.Request) -> web.StreamResponse:
        shape = (await request.json())["bench"]
        every = float(shape["every"])
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await response.write(_sse({"type": "response.created", "response": {"id": "r1"}}))
        delta = _delta(int(shape["size"]))
        loop = asyncio.get_running_loop()
        began = loop.time()
        for n in range(int(shape["events"])):
            if every:  # on a schedule, so that one late event does not delay the rest
                await asyncio.sleep(max(0.0, began + (n + 1) * every - loop.time()))
            await response.write(delta)
        usage = {"input_tokens": 1200, "output_tokens": 300}
        done = {"type": "response.completed", "response": {"id": "r1", "usage": usage}}
        await response.write(_sse(done))
        await response.write_eof()
        return response

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/v1/responses", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    print(json.dumps(sock.getsockname()[1]), flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, _until_parent_goes)
    finally:
        await runner.cleanup()


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


@cache
def _delta(size: int) -> bytes:
    """A text delta event of ``size`` bytes, whole SSE framing included."""
    head, tail = b'data: {"type":"response.output_text.delta","delta":"', b'"}\n\n'
    return head + b"x" * max(0, size - len(head) - len(tail)) + tail


def main(argv: list[str]) -> int:
    if argv[:1] == ["upstream"]:
        asyncio.run(_serve_upstream())
    elif argv[:1] == ["gateway"] and len(argv) == 4:
        _serve_gateway(argv[1], Path(argv[2]), int(argv[3]))
    else:
        print("usage: python -m bench.gateway upstream | gateway URL FOLDER N", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
