"""watcherd logs -f on a job run by the real Codex, while it runs: a step that takes 2 s
is seen before the job ends; status shows it; the daemon logs one line per step."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.git_server import GitServer
from tests.support.helpers import DaemonProcess, cli, cli_environ, wait_for, write_job
from tests.support.model_server import ScriptedModel, Step
from watcherd.cli.main import main

pytestmark = [pytest.mark.docker, pytest.mark.codex]


def test_logs_follow_a_running_codex_job_live(
    work_root: Path, codex_daemon: Callable[..., DaemonProcess], model: ScriptedModel,
    git_server: GitServer, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    model.steps += [
        Step("tool", "sleep 2; echo slow-step-done > SLOW.md"),
        Step("tool", "cat SLOW.md"),
        Step("message", "Wrote SLOW.md."),
    ]
    daemon = codex_daemon()
    write_job(work_root / "inbox", "live.yaml", repo_url=git_server.url("demo.git"),
              prompt="write SLOW.md")  # fmt: skip
    follower = subprocess.Popen(cli(daemon, "logs", "-f", "live"), stdout=subprocess.PIPE,
                                text=True, env=cli_environ())  # fmt: skip
    seen: list[tuple[float, str]] = []

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            seen.append((time.monotonic(), line.rstrip("\n")))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        # While the 2 s step runs, status tells what the agent is doing.
        def activity() -> str | None:
            assert main(["--config", str(daemon.config_path), "status", "--json"]) == 0
            running = json.loads(capsys.readouterr().out)["running"]
            return running[0]["last_activity"] if running else None

        assert "sleep 2" in wait_for(lambda: (a := activity()) and "sleep 2" in a and a, 60,
                                     "status showing the slow step")  # fmt: skip
        follower.wait(timeout=120)
    finally:
        follower.kill()
        reader.join()
    ended = time.monotonic()
    lines = [line for _, line in seen]
    assert follower.returncode == 0, lines
    started = next(t for t, line in seen if line == "$ sleep 2; echo slow-step-done > SLOW.md")
    assert ended - started > 1.5  # shown as it began, not after the job ended
    assert "$ cat SLOW.md" in lines and "    slow-step-done" in lines
    assert "agent: Wrote SLOW.md." in lines
    assert lines[-1] == "--- done: codex finished ---"
    assert any(line.startswith("turn done: ") for line in lines)
    log = daemon.log()
    assert "watcherd.agent: job " in log
    assert "ran sleep 2; echo slow-step-done > SLOW.md (exit 0)" in log
    assert "said: Wrote SLOW.md." in log
