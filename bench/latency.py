"""Figure 1: one job at a time, drop → container start and container exit → job filed,
beside docker-py's create + start with the same flags; where the daemon's time goes.

Everything is seen from outside: inotify on the work root's folders (claim, state writes,
out/, workspaces/, homes/, changes.patch, exit.json, done/) and Docker's event stream
(create, start, die, destroy). Nothing is added to the daemon.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from bench.common import (
    Daemon,
    create_kwargs,
    daemon_config,
    drop,
    floor_jobs,
    job_bytes,
    log,
    make_root,
    make_upstream,
    remove_containers,
    scratch,
)
from bench.report import Figure, Report, summary
from bench.watchers import (
    IN_CREATE,
    IN_DELETE,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    DockerEvent,
    DockerEvents,
    FolderWatch,
    FsEvent,
)

SECTION = "1 latency"
WARMUP = 3  # the first jobs make the cache and the results repository: not counted
FOLDERS = ("inbox", "running", "state", "out", "workspaces", "homes", "done", "failed", "cache")

# (name, from, to, what it holds): the daemon's work between two things seen from outside.
START_PHASES = (
    (
        "drop → 1st state write",
        "drop",
        "state1",
        "inotify reaches the main loop, has_writer, flock, state/<id>.json (fsync file+dir)",
    ),
    ("state write → claim rename", "state1", "claim", "renameat2 inbox → running"),
    (
        "claim → out/<id> made",
        "claim",
        "out",
        "2 dir fsyncs, read, parse, thread, remove/mkdir out (no find() for a fresh claim)",
    ),
    ("out → workspace dir", "out", "workspace", "cache lock, git fetch file://, the ref read"),
    ("workspace → home dir", "workspace", "home", ".git written, git checkout, chown of the tree"),
    ("home → docker create", "home", "create", "agent home, build_spec, state write, create"),
    ("docker create → start", "create", "start", "the start API call"),
)
END_PHASES = (
    (
        "die → changes.patch",
        "die",
        "patch",
        "wait() returns, inspect, home collect, make_safe, update-ref (no bundle: no diff)",
    ),
    ("changes.patch → exit.json", "patch", "exit", "make_safe, exit.json (fsync file+dir)"),
    ("exit.json → home removed", "exit", "home_gone", "rmtree of the agent home"),
    (
        "home removed → filed",
        "home_gone",
        "filed",
        "seal: chown of the workspace tree, rename to done/, 2 dir fsyncs",
    ),
)


@dataclass
class JobTimes:
    name: str
    job_id: str = ""
    t: dict[str, int] = field(default_factory=dict)  # wall-clock ns
    state_writes: int = 0

    def ms(self, a: str, b: str) -> float:
        if a not in self.t or b not in self.t:
            return math.nan
        return (self.t[b] - self.t[a]) / 1e6


def run(report: Report, quick: bool, image: str, docker_client: docker.DockerClient) -> None:
    jobs = 20 if quick else 200
    with scratch("latency") as base:
        daemon_jobs = daemon_run(base, image, docker_client, jobs)
        floor = _floor_run(base, image, docker_client, jobs)
    _report(report, daemon_jobs[WARMUP:], floor)


# -- the daemon --------------------------------------------------------------------------


def daemon_run(
    base: Path, image: str, docker_client: docker.DockerClient, jobs: int, **overrides: Any
) -> list[JobTimes]:
    url = make_upstream(base)
    root = make_root(base)
    filed = threading.Semaphore(0)

    def on_event(event: FsEvent) -> None:
        if event.folder in ("done", "failed") and event.mask & IN_MOVED_TO:
            filed.release()

    watch = FolderWatch(root, FOLDERS, expand=["out"], on_event=on_event).start()
    events = DockerEvents(docker_client, root).start()
    # As before the disk bound (its cost: section 8), unless told otherwise.
    config = {"disk_bound": "poll", **overrides}
    daemon = Daemon(base, daemon_config(root, image, concurrency=1, **config))
    drops: dict[str, int] = {}
    data = job_bytes(url)
    try:
        daemon.start()
        log(f"latency: {WARMUP} + {jobs} jobs one at a time through the daemon")
        for n in range(WARMUP + jobs):
            name = f"lat{n:04d}.yaml"
            drops[name] = drop(root / "inbox", name, data)
            if not filed.acquire(timeout=120):
                raise TimeoutError(f"{name} was not filed within 120 s:\n{daemon.log()[-3000:]}")
        # The last job's container is removed after it is filed.
        time.sleep(0.5)
    finally:
        daemon.stop()
        events.stop()
        watch.stop()
        remove_containers(docker_client, root)
    failed = list((root / "failed").iterdir())
    if failed:
        raise RuntimeError(f"{len(failed)} job(s) failed; see {daemon.log_path}")
    if watch.overflowed:
        raise RuntimeError("the inotify queue overflowed: phases would be wrong")
    return _assemble(drops, watch.snapshot(), events.snapshot())


def _assemble(drops: dict[str, int], fs: list[FsEvent], dk: list[DockerEvent]) -> list[JobTimes]:
    by_name = {name: JobTimes(name, t={"drop": t}) for name, t in drops.items()}
    by_id: dict[str, JobTimes] = {}
    claimed_from: dict[int, tuple[str, int]] = {}  # rename cookie → (inbox name, time)
    state_times: dict[str, list[int]] = defaultdict(list)
    for e in fs:
        if e.folder == "inbox" and e.mask & IN_MOVED_FROM and e.name in by_name:
            claimed_from[e.cookie] = (e.name, e.t_ns)
        elif e.folder == "running" and e.mask & IN_MOVED_TO and e.cookie in claimed_from:
            name, t = claimed_from[e.cookie]
            job = by_name[name]
            job.job_id = e.name.removesuffix(".yaml")
            job.t["claim"] = t
            by_id[job.job_id] = job
    for e in fs:
        if e.folder == "state" and e.mask & IN_MOVED_TO and e.name.endswith(".json"):
            state_times[e.name.removesuffix(".json")].append(e.t_ns)
            continue
        key = {
            ("out", IN_CREATE): "out",
            ("workspaces", IN_CREATE): "workspace",
            ("homes", IN_CREATE): "home",
            ("homes", IN_DELETE): "home_gone",
            ("done", IN_MOVED_TO): "filed",
            ("failed", IN_MOVED_TO): "filed",
        }
        for (folder, mask), label in key.items():
            if e.folder == folder and e.mask & mask:
                job_id = e.name.removesuffix(".yaml")
                if job_id in by_id:
                    by_id[job_id].t.setdefault(label, e.t_ns)
        if e.folder.startswith("out/") and e.mask & IN_MOVED_TO:
            owner = by_id.get(e.folder.removeprefix("out/"))
            if owner is not None and e.name in ("changes.patch", "exit.json"):
                owner.t[{"changes.patch": "patch", "exit.json": "exit"}[e.name]] = e.t_ns
    for job_id, times in state_times.items():
        if job_id in by_id:
            by_id[job_id].t["state1"] = times[0]
            by_id[job_id].state_writes = len(times)
    for d in dk:
        if d.job_id in by_id and d.action in ("create", "start", "die", "destroy"):
            by_id[d.job_id].t.setdefault(d.action, d.t_ns)
    return [by_name[name] for name in sorted(by_name)]


# -- the floor: docker-py alone ----------------------------------------------------------


@dataclass
class FloorTimes:
    call: int  # just before containers.create
    create_returned: int
    start_returned: int
    wait_returned: int
    events: dict[str, int] = field(default_factory=dict)

    def ms(self, a: str, b: str) -> float:
        t = {"call": self.call, "wait": self.wait_returned, **self.events}
        if a not in t or b not in t:
            return math.nan
        return (t[b] - t[a]) / 1e6


def _floor_run(
    base: Path, image: str, docker_client: docker.DockerClient, jobs: int
) -> list[FloorTimes]:
    root = base / "floor-root"
    specs = floor_jobs(base, root, image, jobs + WARMUP, "lat")
    events = DockerEvents(docker_client, root).start()
    times: list[FloorTimes] = []
    log(f"latency: {WARMUP} + {jobs} containers one at a time with docker-py alone")
    try:
        for job in specs:
            call = time.time_ns()
            container = docker_client.containers.create(**create_kwargs(job.spec))
            created = time.time_ns()
            container.start()
            started = time.time_ns()
            container.wait()
            waited = time.time_ns()
            container.remove(force=True)
            times.append(FloorTimes(call, created, started, waited))
        time.sleep(0.3)
    finally:
        events.stop()
        remove_containers(docker_client, root)
    by_job = {job.spec.labels["watcherd.job"]: t for job, t in zip(specs, times, strict=True)}
    for d in events.snapshot():
        if d.job_id in by_job and d.action in ("create", "start", "die"):
            by_job[d.job_id].events.setdefault(d.action, d.t_ns)
    return times[WARMUP:]


# -- figures -------------------------------------------------------------------------------


def _report(report: Report, jobs: list[JobTimes], floor: list[FloorTimes]) -> None:
    to_start = summary([j.ms("drop", "start") for j in jobs])
    to_filed = summary([j.ms("die", "filed") for j in jobs])
    floor_start = summary([f.ms("call", "start") for f in floor])
    floor_wait = summary([f.ms("die", "wait") for f in floor])
    n = to_start["n"]
    for stat in ("p50", "p95", "max"):
        report.add(
            Figure(
                SECTION,
                f"drop → container start {stat} (n={n})",
                to_start[stat],
                "ms",
                floor_start[stat],
                "docker-py create+start",
            )
        )
    report.add(
        Figure(
            SECTION,
            "added latency drop → start p50",
            to_start["p50"] - floor_start["p50"],
            "ms",
            goal=20.0,
            note="daemon p50 minus floor p50 (unpaired)",
        )
    )
    report.add(
        Figure(
            SECTION,
            "added latency drop → start p95",
            to_start["p95"] - floor_start["p95"],
            "ms",
            goal=60.0,
        )
    )
    for stat in ("p50", "p95", "max"):
        report.add(
            Figure(
                SECTION,
                f"container exit → filed {stat}",
                to_filed[stat],
                "ms",
                floor_wait[stat],
                "docker-py wait() returns",
            )
        )
    report.add(
        Figure(
            SECTION,
            "added latency exit → filed p50",
            to_filed["p50"] - floor_wait["p50"],
            "ms",
            goal=20.0,
        )
    )
    phases: dict[str, dict[str, float]] = {}
    for label, a, b, what in (*START_PHASES, *END_PHASES):
        stats = summary([j.ms(a, b) for j in jobs])
        phases[label] = {**stats, "what": what}  # type: ignore[dict-item]
        report.add(
            Figure(
                f"{SECTION} phases",
                f"{label} p50 (p95)",
                stats["p50"],
                "ms",
                note=f"p95 {stats['p95']:.1f} ms; {what}",
            )
        )
    after = summary([j.ms("filed", "destroy") for j in jobs])
    report.add(
        Figure(
            f"{SECTION} phases",
            "filed → container removed p50",
            after["p50"],
            "ms",
            note="off the job's slot: the cleanup thread removes it after the job is filed",
        )
    )
    writes = [j.state_writes for j in jobs]
    report.add(
        Figure(
            f"{SECTION} phases",
            "state/<id>.json writes per job",
            sum(writes) / max(len(writes), 1),
            "",
            note="each: fsync file + dir",
        )
    )
    report.details["latency"] = {
        "jobs": n,
        "drop_to_start_ms": to_start,
        "exit_to_filed_ms": to_filed,
        "floor_create_start_ms": floor_start,
        "floor_call_to_create_event_ms": summary([f.ms("call", "create") for f in floor]),
        "floor_create_to_start_event_ms": summary([f.ms("create", "start") for f in floor]),
        "floor_die_to_wait_ms": floor_wait,
        "phases_ms": phases,
        "filed_to_destroy_ms": after,
        "drop_to_filed_ms": summary([j.ms("drop", "filed") for j in jobs]),
        "container_run_ms": summary([j.ms("start", "die") for j in jobs]),
        "floor_container_run_ms": summary([f.ms("start", "die") for f in floor]),
    }
