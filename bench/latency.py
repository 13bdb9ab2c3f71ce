"""Figure 1: one job at a time, drop → container start and container exit → job filed,
beside docker-py's create + start with the same flags; where the daemon's time goes.

Paired (issue 25): each sample is a pair, one daemon job (the job file dropped into the
inbox → its container's start) and, right next to it, one floor container (docker-py
``create`` + ``start`` of the same image and flags, made by the daemon's own build_spec:
the call → its start). The daemon goes first in even pairs and the floor in odd ones
(ABBA), and a member begins only when the one before it is over: its job filed and its
container removed (the daemon's cleanup thread removes it just after filing; the floor
removes its own). The added latency is the distribution of the per-pair differences,
daemon minus floor (p50, p95): load that comes and goes on a shared machine falls on both
members of a pair alike, and a drift within a pair cancels over two pairs. The unpaired
difference of the two sides' percentiles is kept in the details, and the raw sides'
percentiles stand beside it.

Everything is seen from outside: inotify on the work root's folders (claim, state writes,
out/, workspaces/, homes/, changes.patch, exit.json, done/) and Docker's event stream
(create, start, die, destroy). Nothing is added to the daemon.
"""

from __future__ import annotations

import math
import os
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
from bench.report import Figure, Report, paired_differences, summary
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
WARMUP = 3  # the first pairs make the cache and the results repository: not counted
REMOVED_WAIT = 30  # s: a filed job's container is removed by then (else counted, not fatal)
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
    pairs = 20 if quick else 200
    with scratch("latency") as base:
        measured = paired_run(base, image, docker_client, pairs)
    _report(report, measured)


def pair_order(n: int) -> tuple[str, str]:
    """Which member of pair ``n`` goes first: the daemon in even pairs, the floor in odd
    ones (ABBA), so that neither is always the one right after the other's clean-up."""
    return ("daemon", "floor") if n % 2 == 0 else ("floor", "daemon")


@dataclass
class PairedRun:
    """Pair by pair (warm-up pairs left out): the daemon's job, the floor's container,
    which went first, the 1-minute load average after the pair."""

    jobs: list[JobTimes]
    floor: list[FloorTimes]
    first: list[str]
    load: list[float]
    late_removals: int  # daemon jobs whose container was not removed within REMOVED_WAIT


def paired_run(base: Path, image: str, docker_client: docker.DockerClient, pairs: int) -> PairedRun:
    """``WARMUP + pairs`` pairs, each a daemon job and a floor container one after the
    other, in pair_order; each member begins when the one before is filed and removed."""
    load: list[float] = []
    sides = (
        DaemonSide(base, image, docker_client),
        FloorSide(base, image, docker_client, WARMUP + pairs),
    )
    with sides[0] as daemon, sides[1] as floor:
        log(f"latency: {WARMUP} + {pairs} pairs, a daemon job and a docker-py container each")
        for n in range(WARMUP + pairs):
            for side in pair_order(n):
                if side == "daemon":
                    daemon.job(f"lat{n:04d}.yaml", wait_removed=True)
                else:
                    floor.job(n)
            load.append(os.getloadavg()[0])
        time.sleep(0.3)  # the last events
    count = WARMUP + pairs
    return PairedRun(
        jobs=daemon.times()[WARMUP:],
        floor=floor.times()[WARMUP:],
        first=[pair_order(n)[0] for n in range(WARMUP, count)],
        load=load[WARMUP:],
        late_removals=daemon.late_removals,
    )


# -- the daemon --------------------------------------------------------------------------


class DaemonSide:
    """A daemon at concurrency 1 on a work root of its own, watched from outside (inotify,
    Docker events); ``job`` drops one job and returns when it is filed."""

    def __init__(
        self, base: Path, image: str, docker_client: docker.DockerClient, **overrides: Any
    ) -> None:
        self.docker_client = docker_client
        self.url = make_upstream(base)
        self.root = make_root(base)
        self.data = job_bytes(self.url)
        self.drops: dict[str, int] = {}
        self.late_removals = 0  # jobs whose container was not removed within REMOVED_WAIT
        self._filed = threading.Semaphore(0)
        # As before the disk bound (its cost: section 8), unless told otherwise.
        config = {"disk_bound": "poll", **overrides}
        self.daemon = Daemon(base, daemon_config(self.root, image, concurrency=1, **config))
        self.watch = FolderWatch(self.root, FOLDERS, expand=["out"], on_event=self._on_event)
        self.events = DockerEvents(docker_client, self.root)

    def _on_event(self, event: FsEvent) -> None:
        if event.folder in ("done", "failed") and event.mask & IN_MOVED_TO:
            self._filed.release()

    def __enter__(self) -> DaemonSide:
        self.watch.start()
        self.events.start()
        try:
            self.daemon.start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        self.daemon.stop()
        self.events.stop()
        self.watch.stop()
        remove_containers(self.docker_client, self.root)

    def job(self, name: str, wait_removed: bool = False) -> None:
        """Drop one job and wait until it is filed (and, with ``wait_removed``, until the
        daemon's cleanup thread has removed its container too)."""
        self.drops[name] = drop(self.root / "inbox", name, self.data)
        if not self._filed.acquire(timeout=120):
            log_tail = self.daemon.log()[-3000:]
            raise TimeoutError(f"{name} was not filed within 120 s:\n{log_tail}")
        if wait_removed and not self.events.wait_count("destroy", len(self.drops), REMOVED_WAIT):
            self.late_removals += 1  # measured all the same; counted in the details

    def times(self) -> list[JobTimes]:
        """Each job's times, by name; after the side is closed."""
        failed = list((self.root / "failed").iterdir())
        if failed:
            raise RuntimeError(f"{len(failed)} job(s) failed; see {self.daemon.log_path}")
        if self.watch.overflowed:
            raise RuntimeError("the inotify queue overflowed: phases would be wrong")
        return _assemble(self.drops, self.watch.snapshot(), self.events.snapshot())


def daemon_run(
    base: Path, image: str, docker_client: docker.DockerClient, jobs: int, **overrides: Any
) -> list[JobTimes]:
    """``WARMUP + jobs`` jobs one at a time through one daemon, nothing between them."""
    with DaemonSide(base, image, docker_client, **overrides) as side:
        log(f"latency: {WARMUP} + {jobs} jobs one at a time through the daemon")
        for n in range(WARMUP + jobs):
            side.job(f"lat{n:04d}.yaml")
        # The last job's container is removed after it is filed.
        time.sleep(0.5)
    return side.times()


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


class FloorSide:
    """docker-py alone: the daemon's containers (floor_jobs), ``job(n)`` makes, starts,
    waits for and removes the n-th, timing it."""

    def __init__(
        self, base: Path, image: str, docker_client: docker.DockerClient, count: int
    ) -> None:
        self.docker_client = docker_client
        self.root = base / "floor-root"
        self.specs = floor_jobs(base, self.root, image, count, "lat")
        self.events = DockerEvents(docker_client, self.root)
        self.measured: dict[int, FloorTimes] = {}

    def __enter__(self) -> FloorSide:
        self.events.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.events.stop()
        remove_containers(self.docker_client, self.root)

    def job(self, n: int) -> None:
        spec = self.specs[n].spec
        call = time.time_ns()
        container = self.docker_client.containers.create(**create_kwargs(spec))
        created = time.time_ns()
        container.start()
        started = time.time_ns()
        container.wait()
        waited = time.time_ns()
        container.remove(force=True)
        self.measured[n] = FloorTimes(call, created, started, waited)

    def times(self) -> list[FloorTimes]:
        """The containers' times in order, with what Docker's events saw; after the side
        is closed."""
        by_job = {self.specs[n].spec.labels["watcherd.job"]: t for n, t in self.measured.items()}
        for d in self.events.snapshot():
            if d.job_id in by_job and d.action in ("create", "start", "die"):
                by_job[d.job_id].events.setdefault(d.action, d.t_ns)
        return [self.measured[n] for n in sorted(self.measured)]


# -- figures -------------------------------------------------------------------------------


def _report(report: Report, measured: PairedRun) -> None:
    jobs, floor = measured.jobs, measured.floor
    daemon_start = [j.ms("drop", "start") for j in jobs]
    floor_call_start = [f.ms("call", "start") for f in floor]
    to_start = summary(daemon_start)
    floor_start = summary(floor_call_start)
    added = paired_differences(daemon_start, floor_call_start)
    added_start = summary(added)
    by_first = {}  # an order effect would show as a gap between the two
    for side in ("daemon", "floor"):
        chosen = [k for k, first in enumerate(measured.first) if first == side]
        by_first[side] = summary(
            paired_differences(
                [daemon_start[k] for k in chosen], [floor_call_start[k] for k in chosen]
            )
        )
    daemon_filed = [j.ms("die", "filed") for j in jobs]
    floor_die_wait = [f.ms("die", "wait") for f in floor]
    to_filed = summary(daemon_filed)
    floor_wait = summary(floor_die_wait)
    added_filed = summary(paired_differences(daemon_filed, floor_die_wait))
    # Without Docker's start call (the same call on both sides, and the most of their jitter):
    # drop → the create event beside the create call → its event.
    added_create = summary(
        paired_differences(
            [j.ms("drop", "create") for j in jobs], [f.ms("call", "create") for f in floor]
        )
    )
    load = summary(measured.load)
    pairs = added_start["n"]
    n = to_start["n"]
    for stat in ("p50", "p95", "max"):
        report.add(
            Figure(
                SECTION,
                f"drop → container start {stat} (n={n})",
                to_start[stat],
                "ms",
                floor_start[stat],
                "docker-py create+start, paired",
            )
        )
    unpaired = {q: to_start[q] - floor_start[q] for q in ("p50", "p95")}
    for stat, goal, words in (("p50", 20.0, "median"), ("p95", 60.0, "p95")):
        report.add(
            Figure(
                SECTION,
                f"added latency drop → start {stat}, paired",
                added_start[stat],
                "ms",
                goal=goal,
                note=f"{words} of {pairs} per-pair differences, daemon minus floor, ABBA "
                f"order; unpaired {unpaired[stat]:.1f} ms; load {load['p50']:.1f}",
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
            "added latency exit → filed p50, paired",
            added_filed["p50"],
            "ms",
            goal=20.0,
            note=f"median of per-pair differences; unpaired "
            f"{to_filed['p50'] - floor_wait['p50']:.1f} ms",
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
        "method": "paired: each pair a daemon job and a floor container one after the other, "
        "the daemon first in even pairs (ABBA); added = per-pair daemon minus floor",
        "pairs": pairs,
        "added_drop_to_start_paired_ms": added_start,
        "added_drop_to_start_paired_by_first_ms": by_first,
        "added_drop_to_start_unpaired_ms": unpaired,
        "added_drop_to_create_paired_ms": added_create,
        "added_exit_to_filed_paired_ms": added_filed,
        "pairs_drop_to_start_ms": [  # daemon, floor, which went first; pair by pair
            [d, f, first]
            for d, f, first in zip(daemon_start, floor_call_start, measured.first, strict=True)
        ],
        "load_1min": load,
        "late_container_removals": measured.late_removals,
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
