"""Section "spool": parsing a job file and a bare claim (rename + fsyncs), no Docker.
(What bench/spool_bench.py measured before; its targets are kept as goals.)"""

from __future__ import annotations

import time
from pathlib import Path

import docker

from bench.common import scratch
from bench.report import Figure, Report
from watcherd.config import Config
from watcherd.job.spec import parse_job
from watcherd.spool.folders import Layout, Spool

SECTION = "0 spool"
JOB = b"""repo_url: https://github.com/acme/widgets.git
prompt: |
  Fix the failing test in tests/test_api.py and explain the change.
repo_ref: main
timeout: 30m
env: {CI: "1"}
"""


def run(report: Report, quick: bool, image: str, docker_client: docker.DockerClient) -> None:
    parse_ms = _parse(1000 if quick else 5000)
    report.add(Figure(SECTION, "parse_job per job", parse_ms, "ms", goal=2.0))
    with scratch("spool") as base:
        rate = _claim(base, 500 if quick else 2000)
    report.add(
        Figure(
            SECTION, "Spool.claim alone (rename + fsyncs)", rate, "jobs/s", goal=500.0, goal_op=">="
        )
    )


def _parse(n: int) -> float:
    config = Config()
    start = time.perf_counter()
    for _ in range(n):
        parse_job(JOB, config)
    return (time.perf_counter() - start) / n * 1000


def _claim(base: Path, n: int) -> float:
    spool = Spool(Layout(base))
    spool.layout.ensure()
    for i in range(n):
        (spool.layout.inbox / f"job{i:05d}.yaml").write_bytes(JOB)
    start = time.perf_counter()
    for entry in spool.scan_inbox():
        job = spool.claim(entry.name)
        assert job is not None
        job.release()
    return n / (time.perf_counter() - start)
