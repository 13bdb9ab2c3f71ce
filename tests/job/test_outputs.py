from __future__ import annotations

import os
from pathlib import Path

from watcherd.job.outputs import keep_only_known, make_safe


def test_make_safe_removes_what_could_be_followed_blocked_on_or_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "exit.json" / "inner").mkdir(parents=True)  # a folder where the record goes
    os.symlink("/etc/passwd", out / "summary.md")
    os.mkfifo(out / "events.jsonl")
    (out / "run.log").write_text("kept\n")
    (out / "notes").mkdir()
    os.symlink("../../..", out / "notes" / "up")
    (out / "notes" / "kept.txt").write_text("kept\n")
    (out / "sub" / ".git").mkdir(parents=True)
    (out / "sub" / ".git" / "config").write_text("[core]\n\tfsmonitor = touch /tmp/x\n")
    (out / "bare").mkdir()
    (out / "bare" / ".git").write_text("gitdir: /elsewhere\n")

    removed = make_safe(out)

    assert sorted(removed) == sorted([
        "exit.json (directory)", "summary.md (symlink)", "events.jsonl (fifo)",
        "notes/up (symlink)", "sub/.git (directory)", "bare/.git (file)",
    ])  # fmt: skip
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "bare", "notes", "notes/kept.txt", "run.log", "sub",
    ]  # fmt: skip
    assert make_safe(out) == []  # nothing left to remove


def test_keep_only_known_gives_back_the_space(tmp_path: Path) -> None:
    (tmp_path / "run.log").write_text("x")
    (tmp_path / "big.bin").write_bytes(b"0" * 1000)
    (tmp_path / "sessions").mkdir()
    assert keep_only_known(tmp_path) == [
        "big.bin (over the disk budget)", "sessions (over the disk budget)",
    ]  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["run.log"]
