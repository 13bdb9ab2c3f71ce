"""Who may run now: the concurrency limit, one job per clone, one job per login.

Jobs on the same repo_dir share a clone, so they run one after another. A
ChatGPT login's refresh token is single-use and Codex rewrites auth.json
without a lock, so each login dir serves one job at a time; API-key jobs (and
jobs without auth) need no dir and run in parallel. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from watcherd.jobrun import Lease


@dataclass
class Scheduler:
    concurrency: int
    auth_dirs: Sequence[Path] = ()  # empty: jobs need no login dir
    api_key: str | None = None
    _repos: set[str] = field(default_factory=set)
    _auth_in_use: set[Path] = field(default_factory=set)
    _active: int = 0

    @property
    def active(self) -> int:
        return self._active

    def has_slot(self) -> bool:
        return self._active < self.concurrency

    def acquire(
        self, repo_dir: str, *, force: bool = False, auth_dir: Path | None = None
    ) -> Lease | None:
        """A lease to run a job on ``repo_dir`` now, or None if it must wait.

        ``force`` is for a container that is already running (adopted at start-up):
        it counts against the limits but is never refused.
        """
        if not force and (not self.has_slot() or repo_dir in self._repos):
            return None
        login = auth_dir if auth_dir is not None else self._free_auth_dir()
        if self.auth_dirs and login is None:
            if not force:
                return None
            login = self.auth_dirs[0]
        self._repos.add(repo_dir)
        if login is not None:
            self._auth_in_use.add(login)
        self._active += 1
        return Lease(auth_dir=login, api_key=self.api_key)

    def release(self, repo_dir: str, lease: Lease) -> None:
        self._repos.discard(repo_dir)
        if lease.auth_dir is not None:
            self._auth_in_use.discard(lease.auth_dir)
        self._active -= 1

    def _free_auth_dir(self) -> Path | None:
        return next((d for d in self.auth_dirs if d not in self._auth_in_use), None)
