"""A fresh agent home for every job: the operator's config in, the job's session out.

homes/<id>/   CODEX_HOME of one job (0700, the job's user), mounted at
              /home/codex/.codex. It starts with copies of the operator's config.toml
              and AGENTS.md (root's and read-only when the daemon is root) and, with a
              ChatGPT login, of the login's auth.json. After the job a refreshed
              auth.json goes back to the login, once checked; the session transcripts
              move to out/<id>/sessions/; the home is removed. No job sees another's
              home, and nothing a job writes there reaches a later job.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from watcherd.fsutil import User, remove_tree, write_atomic

log = logging.getLogger("watcherd.home")

SHARED_FILES = ("config.toml", "AGENTS.md")  # from the operator's Codex dir, read-only
AUTH_FILE = "auth.json"
MAX_SHARED_BYTES = 1024 * 1024
MAX_AUTH_BYTES = 64 * 1024


class AgentHomes:
    def __init__(self, root: Path) -> None:
        self.folder = root / "homes"

    def path(self, job_id: str) -> Path:
        return self.folder / job_id

    def create(self, job_id: str, user: User, source: Path | None, login: bool) -> Path:
        """A new home, with what the job may have of ``source`` (the operator's Codex dir)."""
        home = self.path(job_id)
        remove_tree(home)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        home.mkdir(mode=0o700)
        as_root = os.geteuid() == 0
        if as_root:
            os.chown(home, user.uid, user.gid)
        if source is None:
            return home
        for name in SHARED_FILES:
            data = read_regular(source / name, MAX_SHARED_BYTES)
            if data is not None:
                # Root's and 0444: the agent cannot change it (only replace its own copy).
                write_atomic(home / name, data, mode=0o444)
        if login:
            data = read_regular(source / AUTH_FILE, MAX_AUTH_BYTES)
            if data is not None:
                write_atomic(home / AUTH_FILE, data, mode=0o600, owner=(user.uid, user.gid))
        return home

    def collect(self, job_id: str, login: Path | None, out_dir: Path) -> None:
        """After the container exited: write back a refreshed login, keep the sessions."""
        home = self.path(job_id)
        if not home.is_dir() or home.is_symlink():
            return
        if login is not None:
            self._write_back_login(home, login)
        sessions = home / "sessions"
        if sessions.is_dir() and not sessions.is_symlink():
            target = out_dir / "sessions"
            remove_tree(target)  # the agent's own, if it made one there
            os.rename(sessions, target)

    def remove(self, job_id: str) -> None:
        remove_tree(self.path(job_id))

    def _write_back_login(self, home: Path, login: Path) -> None:
        """Codex rotates a ChatGPT login's single-use refresh token during a job; the new
        one must reach the next job. Only a plausible refresh of the same account is
        taken: a regular file, small, JSON with tokens, same account id."""
        new = read_regular(home / AUTH_FILE, MAX_AUTH_BYTES)
        old = read_regular(login / AUTH_FILE, MAX_AUTH_BYTES)
        if new is None or new == old:
            return
        problem = login_refresh_problem(new, old)
        if problem:
            log.warning("not taking the job's auth.json back into %s: %s", login, problem)
            return
        folder = login.stat()
        write_atomic(login / AUTH_FILE, new, mode=0o600, owner=(folder.st_uid, folder.st_gid))
        log.info("the login in %s was refreshed by a job; saved", login)


def login_refresh_problem(new: bytes, old: bytes | None) -> str:
    """Why ``new`` is not a refresh of the login ``old``; empty if it is one. Only a
    login that names its account can be refreshed: an API-key login (no account) or a
    different account is never taken back."""
    record = _json(new)
    tokens = record.get("tokens") if isinstance(record, dict) else None
    if not isinstance(tokens, dict):
        return "no tokens"
    for field in ("access_token", "refresh_token"):
        if not isinstance(tokens.get(field), str) or not tokens[field]:
            return f"tokens.{field} missing"
    previous = _identity(_json(old) if old is not None else None)
    if previous is None:
        return "the login had no account to refresh"
    if _identity(record) != previous:
        return "a different account"
    return ""


def _identity(record: Any) -> tuple[str, str | None] | None:
    """(account id, the id token's subject) of a ChatGPT login, None without an account."""
    tokens = record.get("tokens") if isinstance(record, dict) else None
    if not isinstance(tokens, dict):
        return None
    account = tokens.get("account_id")
    if not isinstance(account, str) or not account:
        return None
    return account, _token_subject(tokens.get("id_token"))


def _token_subject(token: Any) -> str | None:
    """The ``sub`` claim of a JWT, unverified: only compared with the one before."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, RecursionError):
        return None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    return subject if isinstance(subject, str) else None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def read_regular(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes if it has at most ``limit``; never follows a link, never
    blocks on a fifo."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        return os.read(fd, limit + 1)[:limit]
    finally:
        os.close(fd)
