"""show, logs (-f) and status on a root laid out as the daemon leaves it (no Engine)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from watcherd.cli.main import main
from watcherd.job.results import JobState, Outcome, SavedWork, write_exit_json
from watcherd.spool.folders import Claimed, Layout, Spool

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "codex"
JOB = b"repo_url: https://h/acme/widgets.git\nprompt: fix it\n"


def claim(root: Path, name: str) -> tuple[Spool, Claimed]:
    layout = Layout(root)
    layout.ensure()
    spool = Spool(layout)
    (layout.inbox / name).write_bytes(JOB)
    job = spool.claim(name)
    assert job is not None
    layout.out_dir(job.job_id).mkdir()
    return spool, job


def finish(spool: Spool, job: Claimed) -> None:
    out = spool.layout.out_dir(job.job_id)
    (out / "summary.md").write_text("# watcherd job summary\n\nAll \x1b[31mgood\x1b[0m.\n")
    saved = SavedWork("/r/repos/widgets-1.git", f"watcherd/{job.job_id}", "a" * 40, "b" * 40,
                      ("b" * 40,))  # fmt: skip
    outcome = Outcome(JobState.DONE, "codex finished", attempts=1, exit_code=0, saved=saved)
    write_exit_json(out, job.job_id, job.source_name, outcome)
    spool.finish(job, ok=True)


def test_show_a_finished_job_as_text_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool, job = claim(tmp_path, "fix-42.yaml")
    finish(spool, job)
    assert main(["--root", str(tmp_path), "show", "fix-42"]) == 0
    text = capsys.readouterr().out
    assert f"fix-42.yaml  job {job.job_id}" in text
    assert "state:      done: codex finished" in text
    assert f"results:    branch watcherd/{job.job_id} in /r/repos/widgets-1.git" in text
    assert f"git fetch /r/repos/widgets-1.git watcherd/{job.job_id}" in text
    assert "All good." in text and "\x1b" not in text
    assert main(["--root", str(tmp_path), "show", "--json", job.job_id]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "done" and shown["name"] == "fix-42.yaml"
    assert shown["out_dir"] == str(tmp_path / "out" / job.job_id)
    assert shown["record"]["commits"] == ["b" * 40]
    assert main(["--root", str(tmp_path), "show", "nope"]) == 5


def test_show_a_running_and_a_queued_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool, job = claim(tmp_path, "fix-42.yaml")
    events = (FIXTURES / "exec-commands.jsonl").read_bytes().splitlines(keepends=True)
    (spool.layout.out_dir(job.job_id) / "events.jsonl").write_bytes(b"".join(events[:6]))
    assert main(["--root", str(tmp_path), "show", "--json", "fix-42"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "running"
    assert shown["last_activity"] == "running sleep 2; ls"
    assert shown["branch"] == f"watcherd/{job.job_id}"
    assert shown["results_repo"].startswith(str(tmp_path / "repos" / "widgets-"))
    (spool.layout.inbox / "next.yaml").write_bytes(JOB)
    assert main(["--root", str(tmp_path), "show", "next"]) == 0
    assert "state:      queued: not claimed yet" in capsys.readouterr().out


def test_status_shows_name_age_last_activity_and_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool, job = claim(tmp_path, "fix-42.yaml")
    events = FIXTURES / "exec-commands.jsonl"
    (spool.layout.out_dir(job.job_id) / "events.jsonl").write_bytes(events.read_bytes())
    assert main(["--root", str(tmp_path), "status", "--json"]) == 0
    (running,) = json.loads(capsys.readouterr().out)["running"]
    assert running["name"] == "fix-42.yaml"  # readable here: the test runs as the daemon's user
    assert running["last_activity"] == "turn done, 72 tokens (44 in, 0 cached, 28 out)"
    assert running["tokens"] == 72
    assert 0 <= running["last_activity_age_seconds"] < 60
    assert main(["--root", str(tmp_path), "status"]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith(f"running   {job.job_id}  fix-42.yaml  0m0")
    assert "72 tokens  last: turn done" in line


def test_logs_renders_the_events_and_follows_until_the_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool, job = claim(tmp_path, "fix-42.yaml")
    events_path = spool.layout.out_dir(job.job_id) / "events.jsonl"
    lines = (FIXTURES / "exec-commands.jsonl").read_bytes().splitlines(keepends=True)
    events_path.write_bytes(b"".join(lines[:3]))
    assert main(["--root", str(tmp_path), "logs", "fix-42"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("warning: Model metadata")

    def agent() -> None:
        with events_path.open("ab") as handle:
            for line in lines[3:]:
                time.sleep(0.05)
                handle.write(line)
                handle.flush()
        time.sleep(0.1)
        finish(spool, job)

    thread = threading.Thread(target=agent)
    thread.start()
    assert main(["--root", str(tmp_path), "logs", "-f", "fix-42"]) == 0
    thread.join()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("codex session ")
    assert "$ sleep 2; ls" in out and "  exit 1, failed" in out
    assert out[-2].startswith("turn done: 72 tokens")
    assert out[-1] == "--- done: codex finished ---"


def test_names_and_records_cannot_drive_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = "evil\x1b]0;owned\x07.yaml"
    spool, job = claim(tmp_path, hostile)
    assert main(["--root", str(tmp_path), "status"]) == 0
    assert main(["--root", str(tmp_path), "wait", "--timeout", "0.1", job.job_id]) == 124
    finish(spool, job)
    out = spool.layout.out_dir(job.job_id)
    record = json.loads((out / "exit.json").read_text())
    record["started_at"] = "\x1b[2J2026"  # the worker's fields are the agent's to forge
    (out / "exit.json").write_text(json.dumps(record))
    assert main(["--root", str(tmp_path), "show", job.job_id]) == 0
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "\x07" not in captured.out
    assert "started 2026" in captured.out
