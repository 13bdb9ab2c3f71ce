"""Figure 3: a deep queue, with a Runner that returns at once (bench/fakeserver.py: the real
watcherd.daemon.Server in a process of its own). Time to the first claim with 10,000
queued, claims per second, memory (peak, after 1k and 10k jobs), CPU per job; and the
issue-8 figure: CPU per finished job with 5,000 queued vs with 10 queued (the queue held
at that depth by dropping a job for each one filed).

The git work is real (fetch from a local file:// repository, workspace, results, patch):
the product cannot skip it, so the figures include it, and git's CPU is given apart."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import docker
import yaml

from bench.common import (
    CHECKOUT,
    ProcStat,
    daemon_config,
    drop,
    job_bytes,
    log,
    make_root,
    make_upstream,
    profile,
    reap,
    scratch,
    stop_profile,
)
from bench.report import Figure, Report
from bench.watchers import IN_MOVED_FROM, IN_MOVED_TO, FolderWatch, FsEvent

SECTION = "3 queue"
CONCURRENCY = 4
SAMPLE_SECONDS = 0.2
RSS_MARKS = (250, 500, *range(1000, 10_001, 1000))  # RSS after so many jobs, in the JSON


@dataclass(frozen=True)
class Sample:
    t: float  # monotonic
    filed: int
    stat: ProcStat


class FakeServer:
    def __init__(self, base: Path, root: Path, url: str, name: str) -> None:
        self.root = root
        # A runner with no Engine cannot hold disk budgets: polled, as before (no probe).
        config = daemon_config(root, "unused:fake", concurrency=CONCURRENCY, disk_bound="poll")
        self.config_path = base / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = base / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.profiler: subprocess.Popen[bytes] | None = None
        self.spawned_ns = 0
        self.ready_ns = 0

    def start(self) -> FakeServer:
        env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
        with self.log_path.open("ab") as err:
            self.spawned_ns = time.time_ns()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.fakeserver", str(self.config_path)],
                cwd=CHECKOUT,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        threading.Thread(target=self._read_ready, args=(self.proc.stdout,), daemon=True).start()
        self.profiler = profile(self.proc.pid, self.log_path.stem)
        return self

    def _read_ready(self, stdout: IO[bytes] | None) -> None:
        assert stdout is not None
        line = stdout.readline().strip()
        if line:
            self.ready_ns = int(line)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stat(self) -> ProcStat:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{self.log()[-3000:]}")
        return ProcStat.read(self.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        reap(self.proc, 60, then_kill_for=10)
        stop_profile(self.profiler)


class Counter:
    """Claims (leaving the inbox) and filings (into done/ or failed/), from inotify."""

    def __init__(self) -> None:
        self.claims = 0
        self.filed = 0
        self.failed = 0
        self.first_claim_ns = 0

    def __call__(self, event: FsEvent) -> None:
        if event.folder == "inbox" and event.mask & IN_MOVED_FROM:
            if not event.name.startswith("."):
                self.claims += 1
                if not self.first_claim_ns:
                    self.first_claim_ns = event.t_ns
        elif event.folder in ("done", "failed") and event.mask & IN_MOVED_TO:
            self.filed += 1
            if event.folder == "failed":
                self.failed += 1


def run(report: Report, quick: bool, image: str, docker_client: docker.DockerClient) -> None:
    queued = 10_000
    drain_until = 300 if quick else queued
    window = 80 if quick else 500
    with scratch("queue") as base:
        url = make_upstream(base)
        drain = _drain(base, url, queued, drain_until)
        deep = _steady(base, url, 5000, window)
        shallow = _steady(base, url, 10, window)
    report.details["queue"] = {
        **drain,
        "cpu_ms_per_job_5000_queued": deep,
        "cpu_ms_per_job_10_queued": shallow,
    }
    n = f"{queued:,}"
    report.add(
        Figure(
            SECTION,
            f"{n} queued: spawn → first claim",
            drain["spawn_to_claim_s"],
            "s",
            goal=0.5,
            note="python start, imports, Server start-up, rescan",
        )
    )
    report.add(
        Figure(
            SECTION, f"{n} queued: ready → first claim", drain["ready_to_claim_s"], "s", goal=0.5
        )
    )
    report.add(
        Figure(
            SECTION,
            f"claims per second (concurrency {CONCURRENCY}, fake runner)",
            drain["claims_per_s"],
            "jobs/s",
            note="each job runs git 3 times when it commits nothing (fetch, checkout, update-ref)",
        )
    )
    report.add(
        Figure(
            SECTION,
            f"peak RSS over {int(drain['filed']):,} jobs",
            drain["peak_rss_mb"],
            "MB",
            goal=60.0,
        )
    )
    for mark in ("1000", "10000"):
        value = drain.get(f"rss_mb_after_{mark}")
        if value is not None:
            report.add(Figure(SECTION, f"RSS after {int(mark):,} jobs", value, "MB", goal=60.0))
    if "rss_mb_after_10000" in drain:
        growth = drain["rss_mb_after_10000"] - drain["rss_mb_after_1000"]
        report.add(
            Figure(
                SECTION,
                "RSS growth 1k → 10k jobs",
                growth,
                "MB",
                goal=2.0,
                goal_what="no growth (<= 2 MB)",
            )
        )
    report.add(
        Figure(
            SECTION,
            "daemon CPU per job (its own threads)",
            drain["cpu_ms_per_job"],
            "ms",
            note=f"+ {drain['git_cpu_ms_per_job']:.1f} ms in git children",
        )
    )
    report.add(
        Figure(
            SECTION,
            "issue 8: CPU per job, 5,000 queued",
            deep["cpu_ms"],
            "ms",
            note=f"+ git {deep['git_cpu_ms']:.1f} ms; {deep['jobs']} jobs",
        )
    )
    report.add(
        Figure(
            SECTION,
            "issue 8: CPU per job, 10 queued",
            shallow["cpu_ms"],
            "ms",
            note=f"+ git {shallow['git_cpu_ms']:.1f} ms; {shallow['jobs']} jobs",
        )
    )
    report.add(
        Figure(
            SECTION,
            "issue 8: 5,000 queued / 10 queued",
            deep["cpu_ms"] / shallow["cpu_ms"],
            "x",
            goal=1.5,
        )
    )


def _drop_all(inbox: Path, url: str, count: int, prefix: str) -> None:
    data = job_bytes(url)
    for n in range(count):
        drop(inbox, f"{prefix}{n:05d}.yaml", data)


def _drain(base: Path, url: str, queued: int, until: int) -> dict[str, float]:
    root = make_root(base, "drain")
    began = time.monotonic()
    _drop_all(root / "inbox", url, queued, "q")
    log(
        f"queue: {queued:,} jobs dropped in {time.monotonic() - began:.1f} s; "
        f"running the fake-runner server until {until:,} are filed"
    )
    counter = Counter()
    watch = FolderWatch(root, ["inbox", "done", "failed"], on_event=counter).start()
    server = FakeServer(base, root, url, "drain").start()
    samples: list[Sample] = []
    marks: dict[int, ProcStat] = {}
    deadline = time.monotonic() + max(until * 0.5, 120)
    try:
        while counter.filed < until:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {counter.filed} filed:\n{server.log()[-2000:]}")
            stat = server.stat()
            samples.append(Sample(time.monotonic(), counter.filed, stat))
            for mark in RSS_MARKS:
                if mark not in marks and counter.filed >= mark:
                    marks[mark] = stat
            time.sleep(SAMPLE_SECONDS)
        end = server.stat()
        samples.append(Sample(time.monotonic(), counter.filed, end))
        for mark in RSS_MARKS:
            if mark not in marks and counter.filed >= mark:
                marks[mark] = end
    finally:
        server.stop()
        watch.stop()
    if counter.failed:
        raise RuntimeError(f"{counter.failed} job(s) failed; see {server.log_path}")
    # Steady state: from the first sample with 20 jobs filed to the end.
    first = next(s for s in samples if s.filed >= 20)
    last = samples[-1]
    jobs = last.filed - first.filed
    result = {
        "queued": float(queued),
        "filed": float(last.filed),
        "spawn_to_claim_s": (counter.first_claim_ns - server.spawned_ns) / 1e9,
        "ready_to_claim_s": (counter.first_claim_ns - server.ready_ns) / 1e9,
        "claims_per_s": jobs / (last.t - first.t),
        "peak_rss_mb": end.hwm_mb,
        "cpu_ms_per_job": (last.stat.cpu - first.stat.cpu) / jobs * 1000,
        "git_cpu_ms_per_job": (last.stat.children_cpu - first.stat.children_cpu) / jobs * 1000,
    }
    for mark, stat in marks.items():
        result[f"rss_mb_after_{mark}"] = stat.rss_mb
    return result


def _steady(base: Path, url: str, queued: int, jobs: int) -> dict[str, float]:
    """CPU per filed job while the inbox holds ``queued`` jobs (one dropped per filing)."""
    root = make_root(base, f"steady{queued}")
    _drop_all(root / "inbox", url, queued, "s")
    counter = Counter()
    watch = FolderWatch(root, ["inbox", "done", "failed"], on_event=counter).start()
    server = FakeServer(base, root, url, f"steady{queued}").start()
    warmup = 30
    data = job_bytes(url)
    dropped = queued
    start: tuple[int, ProcStat] | None = None
    log(f"queue: CPU per job with {queued:,} queued, over {jobs} jobs")
    deadline = time.monotonic() + 30 + jobs * 0.5
    try:
        while True:
            filed = counter.filed
            while dropped < queued + filed:  # keep the queue at its depth
                drop(root / "inbox", f"t{dropped:06d}.yaml", data)
                dropped += 1
            if start is None and filed >= warmup:
                start = (filed, server.stat())
            if start is not None and filed >= start[0] + jobs:
                end = (filed, server.stat())
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {filed} filed:\n{server.log()[-2000:]}")
            time.sleep(0.002)
    finally:
        server.stop()
        watch.stop()
    if counter.failed:
        raise RuntimeError(f"{counter.failed} job(s) failed; see {server.log_path}")
    n = end[0] - start[0]
    return {
        "queued": float(queued),
        "jobs": float(n),
        "cpu_ms": (end[1].cpu - start[1].cpu) / n * 1000,
        "git_cpu_ms": (end[1].children_cpu - start[1].children_cpu) / n * 1000,
    }
