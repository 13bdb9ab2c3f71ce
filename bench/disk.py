"""Figure 8: what the kernel-held disk budget costs a job (issue 24): the same daemon and
no-op jobs with ``disk_bound: auto`` (a filesystem of the budget's size per job: mkfs, a
loop device, a mount and three binds before the workspace; out/<id>/ copied off and
everything released after) beside ``disk_bound: poll`` (the measurement of before), in
one run, the two alternated: drop → container start one job at a time, and the wall time
of many jobs at concurrency 2. Also the filesystem's own making and releasing, in-process.
"""

from __future__ import annotations

import time
from pathlib import Path

import docker

from bench.common import log, scratch
from bench.latency import WARMUP, daemon_run
from bench.report import Figure, Report, summary
from bench.throughput import daemon_wall
from watcherd.config import Config
from watcherd.job.disk import JobDisks
from watcherd.util import loopfs

SECTION = "8 disk bound"
MODES = ("poll", "auto")  # auto: held, where this machine allows (checked in the log)
CONCURRENCY = 2


def run(report: Report, quick: bool, image: str, docker_client: docker.DockerClient) -> None:
    why = loopfs.problem()
    if why:
        report.notes.append(f"section disk skipped: {why}")
        return
    rounds, per_round = (2, 10) if quick else (2, 50)
    tp_jobs = 20 if quick else 500
    starts: dict[str, list[float]] = {mode: [] for mode in MODES}
    walls: dict[str, float] = {}
    for n in range(rounds):
        for mode in MODES if n % 2 == 0 else reversed(MODES):
            with scratch(f"disk-latency-{mode}") as base:
                jobs = daemon_run(base, image, docker_client, per_round, disk_bound=mode)
                _check_mode(base, mode)
            starts[mode] += [j.ms("drop", "start") for j in jobs[WARMUP:]]
    for mode in MODES:
        with scratch(f"disk-throughput-{mode}") as base:
            walls[mode] = daemon_wall(base, image, docker_client, tp_jobs, CONCURRENCY,
                                      disk_bound=mode)  # fmt: skip
            _check_mode(base, mode)
    making = _making(10 if quick else 40)
    polled, held = summary(starts["poll"]), summary(starts["auto"])
    count = int(held["n"])
    report.add(Figure(SECTION, f"drop → start p50, budget held (n={count})", held["p50"], "ms",
                      polled["p50"], "polled", note=f"p95 {held['p95']:.0f} ms, polled "
                      f"{polled['p95']:.0f} ms"))  # fmt: skip
    report.add(Figure(SECTION, "added by the bound, drop → start p50",
                      held["p50"] - polled["p50"], "ms", goal=20.0,
                      note="held p50 minus polled p50, the runs alternated"))  # fmt: skip
    c = f"c={CONCURRENCY}"
    report.add(Figure(SECTION, f"{tp_jobs} jobs {c}: wall, budget held", walls["auto"], "s",
                      walls["poll"], "polled",
                      note=f"{walls['auto'] / tp_jobs * 1000:.0f} ms per job, polled "
                      f"{walls['poll'] / tp_jobs * 1000:.0f} ms"))  # fmt: skip
    report.add(Figure(SECTION, f"{c}: held / polled wall", walls["auto"] / walls["poll"], "x",
                      goal=1.05))  # fmt: skip
    report.add(Figure(SECTION, "make a job's filesystem (10 GiB budget) p50",
                      making["create"]["p50"], "ms",
                      note=f"p95 {making['create']['p95']:.1f} ms: mke2fs, loop device, mount, "
                      "3 binds"))  # fmt: skip
    report.add(Figure(SECTION, "settle out/ and release it p50", making["release"]["p50"], "ms",
                      note="copy out/ (3 files), unbind, unmount, delete the image"))  # fmt: skip
    report.details["disk"] = {
        "drop_to_start_ms": {"poll": polled, "held": held},
        "throughput_s": {"jobs": tp_jobs, "concurrency": CONCURRENCY, **walls},
        "filesystem_ms": making,
    }


def _check_mode(base: Path, mode: str) -> None:
    """The daemon did what it was asked: held (a filesystem per job) or polled."""
    logs = "".join(p.read_text(errors="replace") for p in base.glob("*.log"))
    expected = "disk budgets held" if mode == "auto" else "disk budgets polled"
    if expected not in logs:
        raise RuntimeError(f"disk_bound {mode}: the daemon did not say '{expected}'")


def _making(samples: int) -> dict[str, dict[str, float]]:
    """JobDisks.create, then settle_out + drop_home + release, in this process."""
    budget = Config().disk_budget
    create, release = [], []
    with scratch("disk-make") as base:
        root = base / "work"
        (root / "out").mkdir(parents=True)
        disks = JobDisks(root)
        log(f"disk: making and releasing {samples} job filesystems in-process")
        for n in range(samples):
            job_id = f"20261207T000000Z-bench-{n:06x}"
            began = time.perf_counter()
            disks.create(job_id, budget)
            made = time.perf_counter()
            for name in ("run.log", "events.jsonl", "exit.json"):
                (disks.place(job_id, "out") / name).write_text("x" * 1000)
            began_release = time.perf_counter()
            disks.settle_out(job_id)
            disks.drop_home(job_id)
            disks.release(job_id)
            done = time.perf_counter()
            create.append((made - began) * 1000)
            release.append((done - began_release) * 1000)
    return {"create": summary(create), "release": summary(release)}
