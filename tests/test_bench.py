"""Smoke tests of the benchmark (bench/, `python -m bench`): its floors run the same
containers as the daemon, its report says what misses its goal, its cheap section runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import gateway, latency
from bench.__main__ import main as bench_main
from bench.common import create_kwargs, docker_run_args, floor_jobs
from bench.report import Figure, Report, paired_differences, percentile
from watcherd.backends import LocalRunner


class _Capture:
    """Enough of a docker client for LocalRunner.start: records what create gets."""

    def __init__(self) -> None:
        self.created: dict[str, Any] = {}
        self.containers = self
        self.api = self

    def create(self, image: str, **kwargs: Any) -> Any:
        self.created = {"image": image, **kwargs}
        return type("C", (), {"id": "abc"})()

    def start(self, handle: str) -> None:
        pass


def test_floor_containers_have_the_daemons_flags(tmp_path: Path) -> None:
    (job,) = floor_jobs(tmp_path, tmp_path / "root", "img:1", 1, "t")
    runner = LocalRunner()
    capture = _Capture()
    runner.docker._client = capture
    runner.start(job.spec)
    assert create_kwargs(job.spec) == capture.created
    args = docker_run_args(job.spec)
    for flag in ("--read-only", "--init", "--cap-drop", "--security-opt", "--pids-limit"):
        assert flag in args
    assert args[-1] == "img:1"


def test_report_marks_misses_and_writes_json(tmp_path: Path) -> None:
    report = Report(mode="quick")
    report.add(Figure("s", "fast", 10.0, "ms", goal=20.0))
    report.add(Figure("s", "slow", 30.0, "ms", floor=5.0, floor_what="docker", goal=20.0))
    report.add(Figure("s", "rate", 400.0, "jobs/s", goal=500.0, goal_op=">="))
    assert [f.verdict for f in report.figures] == ["ok", "MISS", "MISS"]
    assert "2 miss their goal" in report.table()
    report.write_json(tmp_path / "b.json")
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["misses"] == ["s: slow", "s: rate"]
    assert percentile([1, 2, 3, 4], 50) == 2.5


def test_latency_pairs_alternate_and_differ_pair_by_pair() -> None:
    """Issue 25: each pair's daemon minus floor, in order, a pair missing a member left
    out; the member that goes first alternates (ABBA), so over four pairs each side goes
    first twice and right after the other twice."""
    assert [latency.pair_order(n) for n in range(4)] == [
        ("daemon", "floor"),
        ("floor", "daemon"),
        ("daemon", "floor"),
        ("floor", "daemon"),
    ]
    sequence = [side for n in range(4) for side in latency.pair_order(n)]
    assert "".join(s[0] for s in sequence) == "dffddffd"
    nan = float("nan")
    daemon = [230.0, 400.0, 250.0, nan, 260.0]
    floor = [220.0, 390.0, nan, 200.0, 270.0]
    assert paired_differences(daemon, floor) == [10.0, 10.0, -10.0]
    with pytest.raises(ValueError):
        paired_differences([1.0], [1.0, 2.0])


def test_spool_section_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert bench_main(["--quick", "--only", "spool", "--json", str(out)]) == 0
    names = [f["name"] for f in json.loads(out.read_text())["figures"]]
    assert "parse_job per job" in names


def test_gateway_section_measures_every_path(tmp_path: Path) -> None:
    """A few calls of each kind, through the real gateway and the image's forwarder."""
    plan = gateway.Plan(
        calls=3, stream_mib=1, repeats=1, streams=3, seconds=0.2, rounds=1,
        forwarder=shutil.which("socat") is not None,
    )  # fmt: skip
    measured = gateway.measure(tmp_path, plan)
    assert all(len(samples) == 3 for samples in measured.first_ms.values())
    assert measured.rates["gateway"] and measured.rates["direct"]
    assert [r.completed for r in measured.rounds["gateway"]] == [3]
    assert [r.completed for r in measured.rounds["direct"]] == [3]
    names = [f.name for f in gateway.figures(plan, measured)]
    assert "first event p50, added by the gateway (unix socket)" in names
    assert "3 concurrent streams, max gap between events" in names
    assert "fork" in gateway.forwarder_options().split(",")  # found in image/entrypoint.sh
