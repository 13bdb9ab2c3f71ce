"""A real daemon (``watcherd run`` in a subprocess, the stand-in worker image) runs a
schedule's job, and its exit.json says which schedule and slot."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.helpers import StartDaemon, exit_record, wait_for
from watcherd.config.schedules import Schedule
from watcherd.triggers.schedules import fingerprint
from watcherd.triggers.state import stamp

pytestmark = pytest.mark.docker


def test_a_scheduled_job_runs_and_carries_its_schedule(
    work_root: Path, start_daemon: StartDaemon, repo_url: str
) -> None:
    cron = "* * * * *"
    # The daemon was last up five minutes ago: at its start the newest minute is due
    # (catch-up: latest), so the test need not wait for the next one.
    folder = work_root / "state" / "schedules" / "every-minute"
    folder.mkdir(parents=True, mode=0o700)
    os.chmod(work_root / "state", 0o700)
    since = datetime.now(UTC) - timedelta(minutes=5)
    (folder / "since.json").write_text(json.dumps(
        {"fingerprint": fingerprint(Schedule("every-minute", cron)), "since": stamp(since)}
    ))  # fmt: skip
    daemon = start_daemon(
        schedules={"every-minute": {"cron": cron, "job": {"repo_url": repo_url,
                                                          "prompt": "succeed"}}},
    )  # fmt: skip
    done = wait_for(lambda: sorted((work_root / "done").glob("*.yaml")), 90, "a scheduled job")
    record = exit_record(work_root, done[0])
    assert record["state"] == "done"
    assert record["schedule"] == "every-minute" and record["trigger"] == "schedule"
    slot = datetime.strptime(record["scheduled_for"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert slot.second == 0 and since < slot <= datetime.now(UTC)
    assert record["job_file"].startswith(f"every-minute-{slot:%Y%m%dT%H%M}Z-")
    assert "earlier slot(s)" in daemon.log() and "dropped as every-minute-" in daemon.log()
    assert daemon.alive()
