"""Benchmarks: job parsing, claim throughput, and drop-to-done latency on Docker.

    python bench/spool_bench.py            # parse + claim figures (no Docker)
    python bench/spool_bench.py --docker   # also latency through a real daemon

Targets (what we watch): parse < 2 ms per job; claim (rename + fsyncs) > 500 jobs/s;
daemon overhead (drop → done minus container run time) < 1.5 s; daemon RSS < 80 MB.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from watcherd.config import Config
from watcherd.job import parse_job
from watcherd.spool import Layout, Spool

JOB = b"""repo_url: https://github.com/acme/widgets.git
prompt: |
  Fix the failing test in tests/test_api.py and explain the change.
repo_ref: main
timeout: 30m
env: {CI: "1"}
"""


def bench_parse(n: int = 5000) -> float:
    config = Config()
    start = time.perf_counter()
    for _ in range(n):
        parse_job(JOB, config)
    return (time.perf_counter() - start) / n * 1000


def bench_claim(n: int = 2000) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(Layout(Path(tmp)))
        spool.layout.ensure()
        for i in range(n):
            (spool.layout.inbox / f"job{i:05d}.yaml").write_bytes(JOB)
        start = time.perf_counter()
        for entry in spool.scan_inbox():
            job = spool.claim(entry.name)
            assert job is not None
            job.release()
        return n / (time.perf_counter() - start)


def bench_daemon(runs: int = 5) -> tuple[float, float]:
    from tests.support.helpers import DaemonProcess, behave_image, wait_finished, write_job

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "work"
        root.mkdir()
        daemon = DaemonProcess(root, {"image": behave_image(), "auth_mode": "none",
                                      "network_mode": "none", "settle_seconds": 0.2})  # fmt: skip
        daemon.start()
        latencies = []
        for i in range(runs):
            start = time.perf_counter()
            write_job(
                root / "inbox", f"b{i}.yaml", repo_url="https://h/acme/w.git", prompt="succeed"
            )
            wait_finished(root, f"b{i}.yaml", timeout=60)
            latencies.append(time.perf_counter() - start)
        rss_kb = int(
            Path(f"/proc/{daemon.proc.pid}/status").read_text().split("VmRSS:")[1].split()[0]
        )  # type: ignore[union-attr]
        daemon.stop()
        return statistics.median(latencies), rss_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docker", action="store_true")
    args = parser.parse_args()
    print(f"parse_job: {bench_parse():.3f} ms per job (target < 2)")
    print(f"claim: {bench_claim():.0f} jobs/s with fsyncs (target > 500)")
    if args.docker:
        latency, rss = bench_daemon()
        print(f"drop -> done, trivial container: median {latency:.2f} s (target < 1.5)")
        print(f"daemon RSS after 5 jobs: {rss:.1f} MB (target < 80)")
    print(
        f"bench process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB"
    )


if __name__ == "__main__":
    main()
