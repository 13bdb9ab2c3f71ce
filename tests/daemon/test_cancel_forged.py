"""cancel/ is writable by everyone who may submit: a real daemon given forged requests and
an inbox name that is not UTF-8 keeps running jobs, and moves nothing it should not."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.support.helpers import StartDaemon, wait_finished, wait_for, write_job
from watcherd.spool.folders import Layout

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def forge(root: Path, name: str, inode: int) -> None:
    entry = f"{name}\0{inode}".encode("utf-8", "surrogatepass")
    key = "queued-" + hashlib.sha256(entry).hexdigest()[:24]
    body = {"by": "eve\nforged", "at": 1, "name": name, "inode": inode}
    (root / "cancel" / f"{key}.json").write_text(json.dumps(body))


def test_forged_requests_and_odd_names_never_stop_or_steer_the_daemon(
    work_root: Path, start_daemon: StartDaemon, repo_url: str
) -> None:
    daemon = start_daemon(concurrency=1)
    layout = Layout(work_root)
    precious = layout.state / "precious.yaml"  # the daemon's own, out of a submitter's reach
    precious.write_text(f"repo_url: {repo_url}\nprompt: succeed\n")
    forge(work_root, "../state/precious.yaml", os.lstat(precious).st_ino)
    forge(work_root, "a" * 300 + ".yaml", 1)  # ENAMETOOLONG in lstat: the loop backed off
    forge(work_root, "\ud800.yaml", 1)  # UnicodeEncodeError in lstat: the daemon stopped
    (layout.cancel / "queued-0.json").write_text(  # an id in a queued request: an assert
        json.dumps({"by": "eve", "at": 1, "job_id": "20261126T210000Z-fix-1a2b3c"})
    )
    # A job dropped under a name that is not UTF-8 is claimed, run and filed.
    with open(os.fsencode(layout.inbox) + b"/.caf\xe9.tmp", "wb") as handle:
        handle.write(f"repo_url: {repo_url}\nprompt: succeed\n".encode())
    os.rename(
        os.fsencode(layout.inbox) + b"/.caf\xe9.tmp", os.fsencode(layout.inbox) + b"/caf\xe9.yaml"
    )
    write_job(layout.inbox, "after.yaml", repo_url=repo_url, prompt="succeed")
    folder, _ = wait_finished(work_root, "after.yaml", timeout=120)
    assert folder == "done"
    wait_for(lambda: len(list(layout.done.glob("*.yaml"))) == 2, 60, "both jobs done")
    assert daemon.alive(), daemon.log()[-3000:]
    assert precious.exists() and not list(layout.running.glob("*.yaml"))
    assert "Traceback" not in daemon.log()
