"""Waiting for a job, woken by inotify: from the inbox to the claim to the end."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from watcherd.cli.main import main
from watcherd.job.results import JobState, Outcome, write_exit_json
from watcherd.spool.folders import Layout, Spool
from watcherd.spool.lookup import Place, resolve
from watcherd.spool.waiting import SAFETY_POLL_SECONDS, Ended, Lost, NotYet, WaitExit, wait_for_end
from watcherd.spool.wakeup import Wakeup


def make_spool(root: Path) -> Spool:
    layout = Layout(root)
    layout.ensure()
    return Spool(layout)


def later(delay: float, action: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def run_job(spool: Spool, name: str, state: JobState) -> float:
    """What the daemon does: claim, record, move. Returns when the move happened."""
    job = spool.claim(name)
    assert job is not None
    time.sleep(0.2)
    write_exit_json(spool.layout.out_dir(job.job_id), job.job_id, name, Outcome(state, "why"))
    spool.finish(job, ok=state is JobState.DONE)
    return time.monotonic()


def test_inotify_wakes_a_waiter_at_once(tmp_path: Path) -> None:
    with Wakeup() as wakeup:
        assert wakeup.has_inotify
        wakeup.watch(tmp_path)
        wakeup.watch(tmp_path / "missing")  # skipped, not an error
        later(0.2, lambda: (tmp_path / "x").write_text("x"))
        began = time.monotonic()
        wakeup.wait(10)
        assert 0.1 < time.monotonic() - began < 2


def test_a_queued_job_is_followed_through_its_claim_to_its_end(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    (spool.layout.inbox / "fix-42.yaml").write_text("x")
    ref = resolve(spool.layout, "fix-42")
    assert ref is not None and ref.place is Place.QUEUED
    moved_at: list[float] = []
    thread = later(0.3, lambda: moved_at.append(run_job(spool, "fix-42.yaml", JobState.DONE)))
    result = wait_for_end(spool.layout, ref, timeout=30)
    thread.join()
    assert isinstance(result, Ended)
    assert result.record["state"] == "done" and result.record["job_file"] == "fix-42.yaml"
    assert result.exit_code is WaitExit.DONE
    assert time.monotonic() - moved_at[0] < SAFETY_POLL_SECONDS / 2  # woken, not polled


def test_a_reused_name_waits_for_the_queued_drop_not_the_earlier_job(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    (spool.layout.inbox / "fix-42.yaml").write_text("x")
    run_job(spool, "fix-42.yaml", JobState.DONE)
    (spool.layout.inbox / "fix-42.yaml").write_text("x")
    ref = resolve(spool.layout, "fix-42")
    assert ref is not None
    thread = later(0.2, lambda: run_job(spool, "fix-42.yaml", JobState.TIMEOUT))
    result = wait_for_end(spool.layout, ref, timeout=30)
    thread.join()
    assert isinstance(result, Ended) and result.exit_code is WaitExit.JOB_TIMEOUT


def test_wait_gives_up_after_its_own_timeout(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    (spool.layout.inbox / "slow.yaml").write_text("x")
    ref = resolve(spool.layout, "slow")
    assert ref is not None
    began = time.monotonic()
    result = wait_for_end(spool.layout, ref, timeout=0.3)
    assert isinstance(result, NotYet) and result.ref.place is Place.QUEUED
    assert time.monotonic() - began < 2


def test_a_job_removed_from_the_inbox_is_lost(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    (spool.layout.inbox / "gone.yaml").write_text("x")
    ref = resolve(spool.layout, "gone")
    assert ref is not None
    later(0.2, lambda: (spool.layout.inbox / "gone.yaml").unlink())
    assert isinstance(wait_for_end(spool.layout, ref, timeout=10), Lost)


def test_a_refused_special_ends_once_its_record_is_written(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    os.symlink("/etc/passwd", spool.layout.inbox / "link.yaml")
    ref = resolve(spool.layout, "link")
    assert ref is not None

    def refuse() -> None:  # the daemon moves a special first, then writes its record
        (entry,) = spool.scan_inbox()
        job_id = spool.reject_special(entry)
        assert job_id is not None
        time.sleep(0.3)
        outcome = Outcome(JobState.INVALID, "link.yaml: is a symlink")
        write_exit_json(spool.layout.out_dir(job_id), job_id, "link.yaml", outcome)

    later(0.1, refuse)
    result = wait_for_end(spool.layout, ref, timeout=10)
    assert isinstance(result, Ended) and result.exit_code is WaitExit.INVALID


@pytest.mark.parametrize(
    ("state", "code"),
    [(JobState.DONE, 0), (JobState.FAILED, 1), (JobState.TIMEOUT, 3), (JobState.INVALID, 4)],
)
def test_the_cli_prints_the_record_and_exits_by_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], state: JobState, code: int
) -> None:
    spool = make_spool(tmp_path)
    (spool.layout.inbox / "job.yaml").write_text("x")
    thread = later(0.1, lambda: run_job(spool, "job.yaml", state))
    assert main(["--root", str(tmp_path), "wait", "job", "--timeout", "30s"]) == code
    thread.join()
    assert json.loads(capsys.readouterr().out)["state"] == state.value


def test_the_cli_for_unknown_names_and_its_own_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = make_spool(tmp_path)
    assert main(["--root", str(tmp_path), "wait", "nothing"]) == WaitExit.UNKNOWN
    assert "no job 'nothing'" in capsys.readouterr().err
    (spool.layout.inbox / "job.yaml").write_text("x")
    assert main(["--root", str(tmp_path), "wait", "job", "--timeout", "0.2"]) == 124
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "job.yaml (queued in the inbox) has not ended after 0.2s" in captured.err
