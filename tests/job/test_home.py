from __future__ import annotations

import json
import os
from pathlib import Path

from watcherd.agents.codex import CODEX
from watcherd.job.home import AgentHomes
from watcherd.util.fsutil import User

ME = User(os.getuid(), os.getgid())


def login(refresh: str, account: str = "acct-1") -> bytes:
    tokens = {"access_token": f"a-{refresh}", "refresh_token": refresh, "account_id": account}
    return json.dumps({"tokens": tokens, "last_refresh": "2026-11-27T00:00:00Z"}).encode()


def operator_dir(tmp_path: Path) -> Path:
    source = tmp_path / "operator"
    source.mkdir()
    (source / "config.toml").write_text('model = "m"\n')
    (source / "AGENTS.md").write_text("be nice\n")
    (source / "auth.json").write_bytes(login("r1"))
    (source / "history.jsonl").write_text("another job's history\n")
    return source


def test_a_new_home_gets_only_the_operator_config_never_the_login(tmp_path: Path) -> None:
    homes = AgentHomes(tmp_path / "root")
    source = operator_dir(tmp_path)
    home = homes.create("job-1", ME, CODEX, source=source)
    assert sorted(p.name for p in home.iterdir()) == ["AGENTS.md", "config.toml"]
    assert (home / "config.toml").stat().st_mode & 0o777 == 0o444
    (home / "planted").write_text("x")
    again = homes.create("job-1", ME, CODEX, source=source)  # a new attempt: fresh
    assert sorted(p.name for p in again.iterdir()) == ["AGENTS.md", "config.toml"]


def test_sessions_are_kept_and_nothing_goes_back_to_the_operators_dir(tmp_path: Path) -> None:
    homes = AgentHomes(tmp_path / "root")
    source = operator_dir(tmp_path)
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    home = homes.create("job-1", ME, CODEX, source=source)
    (home / "auth.json").write_bytes(login("r9", account="attacker"))  # a job's own login
    (home / "config.toml").unlink()
    (home / "config.toml").write_text('notify = ["touch", "/tmp/pwned"]\n')
    (home / "sessions" / "2026").mkdir(parents=True)
    (home / "sessions" / "2026" / "rollout.jsonl").write_text("transcript\n")
    out = tmp_path / "out"
    out.mkdir()
    homes.collect("job-1", CODEX, out)
    assert (out / "sessions" / "sessions" / "2026" / "rollout.jsonl").read_text() == "transcript\n"
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before
    homes.remove("job-1")
    assert not home.exists()
