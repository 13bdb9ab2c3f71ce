"""Figure 4: a real daemon at rest (CPU and wake-ups over 60 s, 10 s with --quick), the
worker image's size, and a warm rebuild of it (``watcherd image build`` when nothing
changed, with this machine's CA certificates as .ci/run passes them)."""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import sys
import time
from pathlib import Path

import docker

from bench.common import (
    CHECKOUT,
    Daemon,
    ProcStat,
    daemon_config,
    log,
    make_root,
    remove_containers,
    scratch,
)
from bench.report import Figure, Report
from watcherd.config import DEFAULT_IMAGE

SECTION = "4 idle & image"


def run(report: Report, quick: bool, image: str, docker_client: docker.DockerClient) -> None:
    seconds = 10.0 if quick else 60.0
    with scratch("idle") as base:
        cpu, wakeups, threads = _idle(base, image, docker_client, seconds)
    report.add(
        Figure(
            SECTION,
            f"idle daemon CPU over {seconds:.0f} s",
            cpu,
            "%",
            goal=0.1,
            goal_op="<",
            note=f"{wakeups:.1f} thread runs/s, {threads} threads (schedstat)",
        )
    )
    size, rebuild, same = _image(docker_client)
    report.add(Figure(SECTION, f"worker image {DEFAULT_IMAGE} size", size, "MB"))
    report.add(
        Figure(
            SECTION,
            "warm rebuild (watcherd image build, no change)",
            rebuild,
            "s",
            note="layer cache reused: the same image id twice"
            if same
            else "NOT the same image id twice: the layer cache was not fully reused",
        )
    )
    report.details["idle"] = {
        "seconds": seconds,
        "cpu_percent": cpu,
        "wakeups_per_s": wakeups,
        "threads": threads,
        "image_mb": size,
        "rebuild_s": rebuild,
        "rebuild_same_image": same,
    }


def _threads(pid: int) -> tuple[float, int, int]:
    """CPU seconds (the scheduler's ns, finer than /proc/<pid>/stat's 10 ms ticks) and
    times scheduled in, summed over the daemon's threads, and the thread count."""
    cpu_ns = runs = 0
    tasks = glob.glob(f"/proc/{pid}/task/*/schedstat")
    for path in tasks:
        try:
            on_cpu, _waited, slices = Path(path).read_text().split()
        except (FileNotFoundError, ValueError):
            continue
        cpu_ns += int(on_cpu)
        runs += int(slices)
    return cpu_ns / 1e9, runs, len(tasks)


def _idle(
    base: Path, image: str, docker_client: docker.DockerClient, seconds: float
) -> tuple[float, float, int]:
    root = make_root(base)
    daemon = Daemon(base, daemon_config(root, image))
    try:
        daemon.start()
        time.sleep(2.0)  # past the start-up
        log(f"idle: watching an idle daemon for {seconds:.0f} s")
        ticks_before, (cpu_before, runs_before, _) = ProcStat.read(daemon.pid), _threads(daemon.pid)
        began = time.monotonic()
        time.sleep(seconds)
        ticks_after, (cpu_after, runs_after, threads) = (
            ProcStat.read(daemon.pid),
            _threads(daemon.pid),
        )
        elapsed = time.monotonic() - began
    finally:
        daemon.stop()
        remove_containers(docker_client, root)
    log(
        f"idle: /proc/<pid>/stat says {ticks_after.cpu - ticks_before.cpu:.2f} s of CPU "
        f"(10 ms ticks), schedstat {cpu_after - cpu_before:.4f} s"
    )
    cpu = (cpu_after - cpu_before) / elapsed * 100
    return cpu, (runs_after - runs_before) / elapsed, threads


def _image(docker_client: docker.DockerClient) -> tuple[float, float, bool]:
    """Size of the worker image; time of ``watcherd image build`` when nothing changed.
    Built twice under a tag of its own (a cache miss must not replace the image others
    use): the first build brings the layer cache up to this checkout's image/ folder
    (another checkout may have built the tagged image), the second is the timed one."""
    original = docker_client.images.get(DEFAULT_IMAGE)
    size = float(original.attrs["Size"]) / 1e6
    tag = f"watcherd-bench-rebuild:{os.getpid()}"
    certs = sorted(glob.glob("/usr/local/share/ca-certificates/*.crt"))
    ca_args = [arg for cert in certs for arg in ("--ca-cert", cert)]
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    ids = []
    took = 0.0
    try:
        for attempt in ("warm-up", "timed"):
            with scratch("image") as base:
                log(f"image: {attempt} build of the worker image (as {tag})")
                began = time.monotonic()
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "watcherd",
                        "--root",
                        str(base),
                        "image",
                        "build",
                        "--tag",
                        tag,
                        *ca_args,
                    ],
                    cwd=CHECKOUT,
                    env=env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                took = time.monotonic() - began
            ids.append(docker_client.images.get(tag).id)
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, noprune=True)  # only the tag: layers are shared
    if ids[0] != original.id:
        log(f"image: this checkout's image differs from {DEFAULT_IMAGE} (built from another)")
    return size, took, ids[0] == ids[1]
