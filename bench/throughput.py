"""Figure 2: many jobs dropped at once, at concurrency 2 and 4: wall time until all are
filed, beside ``xargs -P docker run --rm`` and a docker-py thread pool (create + start +
wait + remove) running the same containers (same flags, image and mounts); the daemon with
preparing ahead (its default) and without (``prepare_ahead: 0``), so the gain shows."""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker

from bench.common import (
    Daemon,
    FloorJob,
    create_kwargs,
    daemon_config,
    docker_run_args,
    drop,
    floor_jobs,
    job_bytes,
    log,
    make_root,
    make_upstream,
    remove_containers,
    scratch,
)
from bench.report import Figure, Report
from bench.watchers import IN_MOVED_TO, FolderWatch, FsEvent

SECTION = "2 throughput"


def run(report: Report, quick: bool, image: str, docker_client: docker.DockerClient) -> None:
    jobs = 20 if quick else 500
    details: dict[str, dict[str, float]] = {}
    for concurrency in (2, 4):
        with scratch(f"throughput{concurrency}") as base:
            daemon = daemon_wall(base / "on", image, docker_client, jobs, concurrency)
            xargs = _xargs(base, image, docker_client, jobs, concurrency)
            pool = _pool(base, image, docker_client, jobs, concurrency)
            unprepared = daemon_wall(
                base / "off", image, docker_client, jobs, concurrency, prepare_ahead=0
            )
        details[f"concurrency {concurrency}"] = {
            "jobs": jobs,
            "daemon_s": daemon,
            "daemon_unprepared_s": unprepared,
            "xargs_docker_run_s": xargs,
            "docker_py_pool_s": pool,
        }
        c = f"c={concurrency}"
        report.add(
            Figure(
                SECTION,
                f"{jobs} jobs {c}: daemon wall",
                daemon,
                "s",
                pool,
                "docker-py pool",
                note=f"{daemon / jobs * 1000:.0f} ms per job",
            )
        )
        report.add(
            Figure(
                SECTION,
                f"{jobs} jobs {c}: daemon wall, preparing ahead off",
                unprepared,
                "s",
                note=f"{unprepared / jobs * 1000:.0f} ms per job",
            )
        )
        report.add(
            Figure(
                SECTION,
                f"{jobs} jobs {c}: xargs -P{concurrency} docker run --rm",
                xargs,
                "s",
                note=f"{xargs / jobs * 1000:.0f} ms per job",
            )
        )
        report.add(
            Figure(
                SECTION,
                f"{jobs} jobs {c}: docker-py pool",
                pool,
                "s",
                note=f"{pool / jobs * 1000:.0f} ms per job",
            )
        )
        report.add(
            Figure(SECTION, f"{c}: daemon / xargs docker run", daemon / xargs, "x", goal=0.95)
        )
        report.add(Figure(SECTION, f"{c}: daemon / docker-py pool", daemon / pool, "x", goal=1.05))
        report.add(
            Figure(SECTION, f"{c}: preparing off / xargs docker run", unprepared / xargs, "x")
        )
    report.details["throughput"] = details


def daemon_wall(
    base: Path, image: str, docker_client: docker.DockerClient, jobs: int, concurrency: int,
    **overrides: Any,
) -> float:  # fmt: skip
    """Seconds from dropping ``jobs`` at once until every one is filed (after one warm-up)."""
    base.mkdir(exist_ok=True)
    url = make_upstream(base)
    root = make_root(base)
    filed = 0
    all_filed = threading.Event()
    lock = threading.Lock()

    def on_event(event: FsEvent) -> None:
        nonlocal filed
        if event.folder in ("done", "failed") and event.mask & IN_MOVED_TO:
            with lock:
                filed += 1
                if filed == jobs + 1:
                    all_filed.set()

    watch = FolderWatch(root, ["done", "failed"], on_event=on_event).start()
    config = {"disk_bound": "poll", **overrides}  # as before the bound (its cost: section 8)
    daemon = Daemon(base, daemon_config(root, image, concurrency=concurrency, **config))
    data = job_bytes(url)
    try:
        daemon.start()
        # One job first: the cache and the results repository are made once, not timed.
        drop(root / "inbox", "warmup.yaml", data)
        while filed < 1:
            time.sleep(0.01)
        time.sleep(0.5)
        log(f"throughput: {jobs} jobs at once into a daemon at concurrency {concurrency}")
        began = time.monotonic()
        for n in range(jobs):
            drop(root / "inbox", f"tp{n:04d}.yaml", data)
        if not all_filed.wait(jobs * 5.0):
            raise TimeoutError(f"only {filed - 1} of {jobs} jobs filed:\n{daemon.log()[-3000:]}")
        wall = time.monotonic() - began
    finally:
        daemon.stop()
        watch.stop()
        remove_containers(docker_client, root)
    failed = len(list((root / "failed").iterdir()))
    if failed:
        raise RuntimeError(f"{failed} job(s) failed; see {daemon.log_path}")
    return wall


def _xargs(
    base: Path, image: str, docker_client: docker.DockerClient, jobs: int, concurrency: int
) -> float:
    root = base / "xargs-root"
    specs = floor_jobs(base, root, image, jobs, "xa")
    argv = [docker_run_args(job.spec) for job in specs]
    per_job = len(argv[0])
    assert all(len(a) == per_job for a in argv)
    listing = base / "xargs.args"
    listing.write_bytes(b"".join(arg.encode() + b"\0" for args in argv for arg in args))
    log(f"throughput: xargs -P{concurrency} docker run --rm, {jobs} containers")
    try:
        began = time.monotonic()
        with listing.open("rb") as stdin:
            subprocess.run(
                ["xargs", "-0", f"-P{concurrency}", f"-n{per_job}", "docker"],
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                check=True,
            )
        return time.monotonic() - began
    finally:
        remove_containers(docker_client, root)


def _pool(
    base: Path, image: str, docker_client: docker.DockerClient, jobs: int, concurrency: int
) -> float:
    root = base / "pool-root"
    specs = floor_jobs(base, root, image, jobs, "po")

    def one(job: FloorJob) -> int:
        container = docker_client.containers.create(**create_kwargs(job.spec))
        container.start()
        code = int(container.wait()["StatusCode"])
        container.remove(force=True)
        return code

    log(f"throughput: docker-py pool of {concurrency}, {jobs} containers")
    try:
        began = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            codes = list(pool.map(one, specs))
        wall = time.monotonic() - began
    finally:
        remove_containers(docker_client, root)
    if any(codes):
        raise RuntimeError(f"{sum(1 for c in codes if c)} container(s) exited non-zero")
    return wall
