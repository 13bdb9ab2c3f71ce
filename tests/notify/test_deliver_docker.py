"""Notifications from a real daemon: a signed webhook on loopback, a command target, and
a job naming a target the config does not have (refused, and the default still told)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import StartDaemon, cli, cli_environ, wait_for, write_job
from tests.support.webhook import Receiver
from watcherd.notify.deliver import SIGNATURE_HEADER, verify

pytestmark = pytest.mark.docker


def test_webhook_and_command_targets_and_an_unknown_target(
    work_root: Path, start_daemon: StartDaemon, repo_url: str, tmp_path: Path
) -> None:
    secret = tmp_path / "hook.secret"
    secret.write_text("shared-s3cret\n")
    secret.chmod(0o600)
    got = tmp_path / "command-got"
    script = (
        "import os, sys; open(sys.argv[1] + '.' + os.environ['WATCHERD_JOB_STATE'], 'wb')"
        ".write(sys.stdin.buffer.read())"
    )
    receiver = Receiver(statuses=[503])  # the first delivery is retried
    try:
        notify: dict[str, Any] = {
            "hook": {"url": receiver.url, "secret_file": str(secret)},
            "cmd": {"command": [sys.executable, "-c", script, str(got)], "timeout": "20s"},
        }
        daemon = start_daemon(notify=notify, notify_default=["hook"])
        inbox = work_root / "inbox"
        write_job(inbox, "told.yaml", repo_url=repo_url, prompt="succeed", notify=["cmd"])
        run = subprocess.run(cli(daemon, "wait", "told"), capture_output=True, text=True,
                             env=cli_environ(), timeout=120)  # fmt: skip
        assert run.returncode == 0, run.stderr
        record = json.loads(run.stdout)

        # The command got the record on its stdin.
        wait_for(lambda: Path(f"{got}.done").exists(), 30, "the command target")
        assert json.loads(Path(f"{got}.done").read_bytes()) == record

        # The webhook got it too, signed, after one retry.
        wait_for(lambda: len(receiver.requests) == 2, 30, "the webhook, retried once")
        _, headers, body = receiver.requests[-1]
        assert verify(b"shared-s3cret", body, headers[SIGNATURE_HEADER])
        assert json.loads(body) == record

        # A job naming a target the config lacks is refused, naming it; the default
        # target is told about the refusal too.
        write_job(inbox, "rogue.yaml", repo_url=repo_url, prompt="succeed",
                  notify=["team-slack"])  # fmt: skip
        run = subprocess.run(cli(daemon, "wait", "rogue"), capture_output=True, text=True,
                             env=cli_environ(), timeout=120)  # fmt: skip
        refused = json.loads(run.stdout)
        assert (run.returncode, refused["state"]) == (4, "invalid")
        assert "no notify target named 'team-slack'" in refused["reason"]
        wait_for(lambda: len(receiver.requests) == 3, 30, "the refusal's notification")
        _, headers, body = receiver.requests[-1]
        assert verify(b"shared-s3cret", body, headers[SIGNATURE_HEADER])
        assert json.loads(body)["state"] == "invalid"
        assert not Path(f"{got}.invalid").exists()  # a refused job's own targets: never
        log = daemon.log()
        assert "shared-s3cret" not in log and receiver.url not in log
        assert "notifying hook failed (HTTP 503); retrying" in log
    finally:
        receiver.stop()
