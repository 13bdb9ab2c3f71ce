"""`watcherd schedules` and `watcherd schedule pause|resume|run-now ID`, as the operator
types them: what they print, what they keep on disk for the daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from watcherd.cli.main import main
from watcherd.spool.folders import Layout

JOB = {"repo_url": "https://git.example/team/app.git", "prompt": "Check the dependencies ({date})"}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    Layout(tmp_path / "work").ensure()
    path = tmp_path / "config.yaml"
    schedules = {
        "nightly-deps": {"cron": "0 3 * * *", "timezone": "Europe/Berlin", "job": JOB},
        "broken": {"cron": "*/5 * * * *", "job": {**JOB, "flags": ["--yolo"]}},
    }
    path.write_text(yaml.safe_dump({"root": str(tmp_path / "work"), "schedules": schedules}))
    return path


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def test_the_listing_shows_next_times_local_and_utc_and_problems(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config_file, "schedules") == 0
    out = capsys.readouterr().out
    assert "nightly-deps: 0 3 * * * (Europe/Berlin), catchup latest, overlap skip: active" in out
    nexts = [line for line in out.splitlines() if line.startswith("  next") and "CE" in line]
    assert len(nexts) == 3
    for line in nexts:  # 03:00 in Berlin: 02:00 UTC in winter, 01:00 UTC in summer
        assert "03:00 CE" in line and ("02:00 UTC" in line or "01:00 UTC" in line)
    assert "last run  none yet" in out
    assert "problem   its job is refused: flags: codex does not take '--yolo'" in out


def test_pause_resume_and_run_now(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config_file, "schedule", "pause", "nightly-deps") == 0
    assert run(config_file, "schedule", "pause", "nightly-deps") == 0
    out = capsys.readouterr().out
    assert "nightly-deps: paused\nnightly-deps: was paused already" in out
    assert (tmp_path / "work/state/schedules/nightly-deps/paused.json").is_file()
    run(config_file, "schedules")
    assert "overlap skip: paused since" in capsys.readouterr().out
    assert run(config_file, "schedule", "run-now", "nightly-deps") == 0
    dropped = Path(capsys.readouterr().out.strip())
    assert dropped.parent == tmp_path / "work" / "inbox" and dropped.is_file()
    assert "Check the dependencies (20" in dropped.read_text()
    assert run(config_file, "schedule", "resume", "nightly-deps") == 0
    assert "resumed" in capsys.readouterr().out
    run(config_file, "schedules", "--json")
    out = capsys.readouterr().out
    assert '"paused": null' in out and '"kind": "run-now"' in out and '"state": "queued"' in out


def test_refusals(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config_file, "schedule", "pause", "nope") == 2
    assert "no schedule 'nope' (schedules: broken, nightly-deps)" in capsys.readouterr().err
    assert run(config_file, "schedule", "run-now", "broken") == 1
    assert "its job is refused: flags" in capsys.readouterr().err
