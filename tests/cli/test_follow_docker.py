"""Finding and following jobs on a real daemon with the stand-in image: wait (done,
failed, the job's timeout, its own timeout, a job still in the inbox), show, and a name
dropped twice."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import (
    DaemonProcess,
    StartDaemon,
    cli,
    cli_environ,
    wait_finished,
    write_job,
)
from watcherd.cli.main import main

pytestmark = pytest.mark.docker


def drop(root: Path, name: str, prompt: str, repo_url: str, **fields: Any) -> None:
    write_job(root / "inbox", name, repo_url=repo_url, prompt=prompt, **fields)


def wait(daemon: DaemonProcess, *args: str) -> tuple[int, str, str]:
    run = subprocess.run(cli(daemon, "wait", *args), capture_output=True, text=True,
                         env=cli_environ(), timeout=120)  # fmt: skip
    return run.returncode, run.stdout, run.stderr


def show(daemon: DaemonProcess, query: str, capsys: pytest.CaptureFixture[str]) -> Any:
    assert main(["--config", str(daemon.config_path), "show", "--json", query]) == 0
    return json.loads(capsys.readouterr().out)


def test_wait_for_done_failed_the_jobs_timeout_and_its_own(
    work_root: Path, start_daemon: StartDaemon, repo_url: str,
    capsys: pytest.CaptureFixture[str], daemon_config: dict[str, Any],
) -> None:  # fmt: skip
    # Dropped before any daemon runs: wait follows it from the inbox through its claim.
    (work_root / "inbox").mkdir()
    drop(work_root, "ok.yaml", "succeed", repo_url)
    daemon = DaemonProcess(work_root, daemon_config)
    waiting = subprocess.Popen(cli(daemon, "wait", "ok"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=cli_environ())  # fmt: skip
    time.sleep(1)
    assert waiting.poll() is None  # queued: waiting
    daemon = start_daemon()
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    record = json.loads(out)
    assert (record["state"], record["job_file"]) == ("done", "ok.yaml")

    shown = show(daemon, "ok", capsys)
    assert shown["job_id"] == record["job_id"] and shown["state"] == "done"
    assert shown["branch"] == f"watcherd/{record['job_id']}"
    assert Path(shown["results_repo"]).is_dir()
    assert shown["out_dir"] == str(work_root / "out" / record["job_id"])
    assert shown["summary"] == "# done\n"
    assert main(["--config", str(daemon.config_path), "show", "ok"]) == 0
    assert f"results:    branch watcherd/{record['job_id']}" in capsys.readouterr().out

    drop(work_root, "bad.yaml", "fail", repo_url)
    code, out, _ = wait(daemon, "bad.yaml")
    assert (code, json.loads(out)["state"]) == (1, "failed")

    drop(work_root, "slow.yaml", "hang", repo_url, timeout=4)
    code, out, err = wait(daemon, "slow", "--timeout", "1")
    assert (code, out) == (124, "")
    assert "has not ended after 1s" in err
    code, out, _ = wait(daemon, "slow")
    assert (code, json.loads(out)["state"]) == (3, "timeout")

    code, out, err = wait(daemon, "never-dropped")
    assert (code, out) == (5, "") and "no job 'never-dropped'" in err


def test_a_name_dropped_twice_resolves_to_the_latest_and_the_first_by_id(
    work_root: Path, start_daemon: StartDaemon, repo_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    daemon = start_daemon()
    drop(work_root, "fix.yaml", "succeed", repo_url)
    code, out, _ = wait(daemon, "fix")
    first = json.loads(out)["job_id"]
    assert code == 0
    drop(work_root, "fix.yaml", "fail", repo_url)
    code, out, _ = wait(daemon, "fix")
    second = json.loads(out)["job_id"]
    assert code == 1 and second != first
    latest = show(daemon, "fix.yaml", capsys)
    assert (latest["job_id"], latest["state"], latest["name"]) == (second, "failed", "fix.yaml")
    earlier = show(daemon, first, capsys)
    assert (earlier["job_id"], earlier["state"], earlier["name"]) == (first, "done", "fix.yaml")
    assert (work_root / "index" / "fix.yaml").read_text().split() == [first, second]
    wait_finished(work_root, "fix.yaml")
