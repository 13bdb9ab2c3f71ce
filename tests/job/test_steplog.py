"""The daemon logs one line per agent step of a running job, never failing the job."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from watcherd.job.steplog import StepLog

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "codex" / "exec-commands.jsonl"


def test_each_finished_step_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="watcherd.agent")
    events = tmp_path / "events.jsonl"
    steps = StepLog("job-1", events)
    steps.poll()  # no file yet
    lines = FIXTURE.read_bytes().splitlines(keepends=True)
    with events.open("wb") as handle:
        for line in lines:
            handle.write(line)
            handle.flush()
            steps.poll()
    steps.poll()
    logged = [r.getMessage() for r in caplog.records if r.name == "watcherd.agent"]
    assert logged == [
        "job job-1: ran echo hello > NEW.md && cat NEW.md (exit 0)",
        "job job-1: ran sleep 2; ls (exit 0)",
        "job job-1: ran echo oops >&2; false (exit 1, failed)",
        "job job-1: said: Added NEW.md for you. Second line.",
        "job job-1: turn done, 72 tokens (44 in, 0 cached, 28 out)",
    ]


def test_an_adopted_job_does_not_log_its_earlier_steps_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="watcherd.agent")
    events = tmp_path / "events.jsonl"
    events.write_bytes(FIXTURE.read_bytes())
    StepLog("job-1", events).poll()
    assert not [r for r in caplog.records if r.name == "watcherd.agent"]


def test_a_hostile_events_file_breaks_nothing(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "events.jsonl")  # would block a plain open()
    StepLog("job-1", tmp_path / "events.jsonl").poll()
    (tmp_path / "events.jsonl").unlink()
    (tmp_path / "events.jsonl").mkdir()
    StepLog("job-1", tmp_path / "events.jsonl").poll()
