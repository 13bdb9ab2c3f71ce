from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from watcherd.agents.codex import CODEX, login_refresh_problem
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


def test_a_new_home_gets_only_the_operator_config_and_the_login(tmp_path: Path) -> None:
    homes = AgentHomes(tmp_path / "root")
    source = operator_dir(tmp_path)
    home = homes.create("job-1", ME, CODEX, source=source, login=True)
    assert sorted(p.name for p in home.iterdir()) == ["AGENTS.md", "auth.json", "config.toml"]
    assert (home / "config.toml").stat().st_mode & 0o777 == 0o444
    assert (home / "auth.json").stat().st_mode & 0o777 == 0o600
    (home / "planted").write_text("x")
    again = homes.create("job-1", ME, CODEX, source=source, login=False)  # a new attempt: fresh
    assert sorted(p.name for p in again.iterdir()) == ["AGENTS.md", "config.toml"]


def test_a_refresh_of_the_same_account_is_written_back_and_sessions_kept(tmp_path: Path) -> None:
    homes = AgentHomes(tmp_path / "root")
    source = operator_dir(tmp_path)
    home = homes.create("job-1", ME, CODEX, source=source, login=True)
    (home / "auth.json").write_bytes(login("r2"))
    (home / "sessions" / "2026").mkdir(parents=True)
    (home / "sessions" / "2026" / "rollout.jsonl").write_text("transcript\n")
    out = tmp_path / "out"
    out.mkdir()
    homes.collect("job-1", CODEX, source, out)
    assert json.loads((source / "auth.json").read_text())["tokens"]["refresh_token"] == "r2"
    assert (source / "auth.json").stat().st_mode & 0o777 == 0o600
    assert (out / "sessions" / "sessions" / "2026" / "rollout.jsonl").read_text() == "transcript\n"
    homes.remove("job-1")
    assert not home.exists()


def test_a_login_that_is_not_a_refresh_is_not_written_back(tmp_path: Path) -> None:
    homes = AgentHomes(tmp_path / "root")
    source = operator_dir(tmp_path)
    for planted in (login("r9", account="attacker"), b"not json", b"{}"):
        home = homes.create("job-1", ME, CODEX, source=source, login=True)
        (home / "auth.json").write_bytes(planted)
        homes.collect("job-1", CODEX, source, tmp_path)
        assert (source / "auth.json").read_bytes() == login("r1")
    home = homes.create("job-1", ME, CODEX, source=source, login=True)
    (home / "auth.json").unlink()
    os.symlink(source / "history.jsonl", home / "auth.json")  # never followed
    homes.collect("job-1", CODEX, source, tmp_path)
    assert (source / "auth.json").read_bytes() == login("r1")


def test_refresh_rules() -> None:
    assert login_refresh_problem(login("r2"), login("r1")) == ""
    assert login_refresh_problem(login("r2", "other"), login("r1")) == "a different account"
    assert login_refresh_problem(b"[]", login("r1")) == "no tokens"
    assert "refresh_token" in login_refresh_problem(
        json.dumps({"tokens": {"access_token": "a"}}).encode(), None
    )


def test_only_a_login_with_an_account_is_refreshed_and_only_by_the_same_subject() -> None:
    api_key_login = json.dumps({"OPENAI_API_KEY": "sk-x", "tokens": None}).encode()
    assert (
        login_refresh_problem(login("r2"), api_key_login) == "the login had no account to refresh"
    )

    def with_subject(subject: str) -> bytes:
        claims = base64.urlsafe_b64encode(json.dumps({"sub": subject}).encode()).decode()
        record = json.loads(login("r2"))
        record["tokens"]["id_token"] = f"h.{claims.rstrip('=')}.s"
        return json.dumps(record).encode()

    assert login_refresh_problem(with_subject("user-1"), with_subject("user-1")) == ""
    assert login_refresh_problem(with_subject("attacker"), with_subject("user-1")) == (
        "a different account"
    )
