"""Figure 9: ``watcherd serve`` under load beside the daemon, and what it costs the daemon.

Two runs over the same kind of root, one after the other, each with the real daemon
(bench/fakeserver.py: the real Server, a Runner whose containers exit at once, the git work
real) taking jobs at a steady rate:

- without the server: the jobs are dropped into the inbox as ``submit`` does;
- with it: the same rate through ``POST /api/v1/jobs`` of a real ``serve`` process (each
  with an Idempotency-Key), while SSE clients hold ``/api/v1/jobs/{job}/events`` open on
  queued jobs (files whose writer keeps them open, so the daemon leaves them be and every
  stream stays live for the whole run).

Reported: every submission is exactly one filed job; the daemon's drop → claim latency
(p50, p95: from the rename into the inbox to the claim's rename out, both seen by inotify)
and CPU per job in both runs; the server's RSS and CPU.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import aiohttp
import docker

from bench.backlog import FakeServer
from bench.common import (
    CHECKOUT,
    ProcStat,
    drop,
    job_bytes,
    log,
    make_root,
    make_upstream,
    reap,
    scratch,
    wait_for,
)
from bench.report import Figure, Report, percentile
from bench.watchers import IN_MOVED_FROM, IN_MOVED_TO, FolderWatch, FsEvent
from watcherd.web.tokens import add_token

SECTION = "9 serve"


@dataclass
class Load:
    rate: float  # submissions per second
    seconds: float
    streams: int  # SSE clients

    @property
    def jobs(self) -> int:
        return int(self.rate * self.seconds)


@dataclass
class Latencies:
    """drop (rename into the inbox) and claim (rename out of it) per name, from inotify."""

    dropped: dict[str, int] = field(default_factory=dict)
    claimed: dict[str, int] = field(default_factory=dict)
    filed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: FsEvent) -> None:
        with self.lock:
            if event.folder == "inbox" and not event.name.startswith("."):
                if event.mask & IN_MOVED_TO:
                    self.dropped.setdefault(event.name, event.t_ns)
                elif event.mask & IN_MOVED_FROM:
                    self.claimed.setdefault(event.name, event.t_ns)
            elif event.folder in ("done", "failed") and event.mask & IN_MOVED_TO:
                self.filed += 1

    def ms(self) -> list[float]:
        with self.lock:
            return [(self.claimed[n] - t) / 1e6 for n, t in self.dropped.items()
                    if n in self.claimed]  # fmt: skip


@dataclass
class RunFigures:
    jobs: int
    filed: int
    p50_ms: float
    p95_ms: float
    cpu_per_job_ms: float
    server: ProcStat | None = None
    server_cpu_s: float = 0.0
    streams_open: int = 0


def run(report: Report, quick: bool, image: str, docker_client: docker.DockerClient) -> None:
    load = Load(rate=20, seconds=10, streams=50) if quick else Load(rate=50, seconds=60,
                                                                    streams=200)  # fmt: skip
    with scratch("serve") as base:
        url = make_upstream(base)
        plain = _run(base / "plain", url, load, with_server=False)
        served = _run(base / "served", url, load, with_server=True)
    _report(report, load, plain, served)


def _run(base: Path, url: str, load: Load, with_server: bool) -> RunFigures:
    base.mkdir()
    root = make_root(base)
    seen = Latencies()
    watch = FolderWatch(root, ("inbox", "done", "failed"), on_event=seen).start()
    daemon = FakeServer(base, root, url, "daemon").start()
    wait_for(lambda: daemon.ready_ns, 60, "the daemon ready")
    server = holders = None
    try:
        if with_server:
            server, port, token = _start_server(base, root)
            holders = _hold_queued(root, load.streams)
        before = daemon.stat()
        server_before = ProcStat.read(server.pid) if server else None
        mode = "through the API" if with_server else "into the inbox"
        log(f"serve: {load.jobs} jobs at {load.rate:g}/s {mode}"
            + (f", {load.streams} event streams open" if with_server else ""))  # fmt: skip
        data = job_bytes(url)
        if with_server:
            assert holders is not None
            opened = asyncio.run(_api_load(port, token, data, load, [h[0] for h in holders]))
        else:
            opened = 0
            _drop_load(root, data, load)
        wait_for(lambda: seen.filed >= load.jobs, 300, "every job filed", 0.05)
        after = daemon.stat()
        server_after = ProcStat.read(server.pid) if server else None
    finally:
        if holders:
            for name, handle in holders:  # out of the inbox while still open: never jobs
                (root / "inbox" / name).unlink(missing_ok=True)
                handle.close()
        if server is not None:
            server.terminate()
            reap(server, 15)
        daemon.stop()
        watch.stop()
    filed = len(list((root / "done").iterdir())) + len(list((root / "failed").iterdir()))
    ms = seen.ms()
    cpu = (after.cpu + after.children_cpu) - (before.cpu + before.children_cpu)
    figures = RunFigures(
        jobs=load.jobs, filed=filed, p50_ms=percentile(ms, 50), p95_ms=percentile(ms, 95),
        cpu_per_job_ms=cpu * 1000 / max(filed, 1), streams_open=opened,
    )  # fmt: skip
    if server_before is not None and server_after is not None:
        figures.server = server_after
        figures.server_cpu_s = server_after.cpu - server_before.cpu
    return figures


def _start_server(base: Path, root: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    config = base / "serve.yaml"
    config.write_text(f"root: {root}\nallowed_protocols: [file]\n")
    token = add_token(root / "state" / "tokens.yaml", "bench", ["read", "submit"])
    log_path = base / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "watcherd", "--config", str(config), "serve", "--port", "0"],
            cwd=CHECKOUT, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip

    def port() -> int | None:
        found = re.search(r"127\.0\.0\.1:(\d+)/", log_path.read_text())
        return int(found.group(1)) if found else None

    found = wait_for(port, 30, "serve listening")
    assert found is not None
    return proc, found, token


def _hold_queued(root: Path, count: int) -> list[tuple[str, TextIO]]:
    """Queued jobs the daemon leaves alone (their writer keeps them open): each stream
    follows one for the whole run."""
    holders: list[tuple[str, TextIO]] = []
    for n in range(count):
        name = f"held-{n:04d}.yaml"
        handle = (root / "inbox" / name).open("w")
        handle.write("prompt: held\n")
        handle.flush()
        holders.append((name, handle))
    return holders


def _drop_load(root: Path, data: bytes, load: Load) -> None:
    began = time.monotonic()
    for n in range(load.jobs):
        pause = began + n / load.rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        drop(root / "inbox", f"job-{n:05d}.yaml", data)


async def _api_load(port: int, token: str, data: bytes, load: Load, held: list[str]) -> int:
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as session:
        opened = 0
        ready = asyncio.Event()

        async def stream(name: str) -> None:
            nonlocal opened
            endless = aiohttp.ClientTimeout(total=None)
            async with session.get(f"/api/v1/jobs/{name}/events", timeout=endless) as response:
                assert response.status == 200, await response.text()
                opened += 1
                if opened == len(held):
                    ready.set()
                async for _ in response.content:
                    pass

        streams = [asyncio.create_task(stream(name)) for name in held]
        await asyncio.wait_for(ready.wait(), 60)
        began = time.monotonic()

        async def submit(n: int) -> None:
            key = {"Idempotency-Key": f"bench-{n}"}
            async with session.post(f"/api/v1/jobs?name=job-{n:05d}", data=data,
                                    headers=key) as response:  # fmt: skip
                assert response.status == 202, await response.text()

        posts = []
        for n in range(load.jobs):
            pause = began + n / load.rate - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            posts.append(asyncio.create_task(submit(n)))
        await asyncio.gather(*posts)
        still_open = sum(1 for task in streams if not task.done())
        for task in streams:
            task.cancel()
        return still_open


def _report(report: Report, load: Load, plain: RunFigures, served: RunFigures) -> None:
    without = "the same load dropped into the inbox, no server"
    report.add(Figure(
        SECTION, f"{load.jobs} submissions at {load.rate:g}/s through the API with "
        f"{load.streams} event streams open: jobs filed", served.filed, "jobs",
        floor=plain.filed, floor_what=without, goal=load.jobs, goal_op=">=",
        goal_what=f"= {load.jobs}, each exactly once",
        note=f"streams still open when the last submission was answered: "
             f"{served.streams_open} of {load.streams}",
    ))  # fmt: skip
    for label, a, b in (("p50", plain.p50_ms, served.p50_ms), ("p95", plain.p95_ms, served.p95_ms)):
        report.add(Figure(
            SECTION, f"daemon drop → claim {label}, the server beside it", b, "ms", floor=a,
            floor_what=without, goal=a * 1.1 + 1.0, goal_what="≤ 1.1x without (+1 ms)",
        ))  # fmt: skip
    report.add(Figure(
        SECTION, "daemon CPU per job (git included), the server beside it",
        served.cpu_per_job_ms, "ms", floor=plain.cpu_per_job_ms, floor_what=without,
        goal=plain.cpu_per_job_ms * 1.1, goal_what="≤ 1.1x without",
    ))  # fmt: skip
    if served.server is not None:
        report.add(Figure(
            SECTION, "the server: RSS at the end", served.server.rss_mb, "MB",
            note=f"CPU {served.server_cpu_s:.1f} s over the run "
                 f"({served.server_cpu_s * 1000 / max(load.jobs, 1):.1f} ms per submission, "
                 f"the {load.streams} streams included); peak RSS {served.server.hwm_mb:.1f} MB",
        ))  # fmt: skip
