"""Who may run now: the concurrency limit, and one job per login.

Jobs never share a workspace, so jobs on one repository run in parallel. A ChatGPT
login's refresh token is single-use, so each login dir serves one job at a time (its
refreshed auth.json is written back after the job); API-key jobs (and jobs without auth)
need no dir and run in parallel. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from watcherd.job.life import Lease


@dataclass
class Scheduler:
    concurrency: int
    auth_dirs: Sequence[Path] = ()  # empty: jobs need no login dir
    _auth_in_use: set[Path] = field(default_factory=set)
    _active: int = 0

    @property
    def active(self) -> int:
        return self._active

    def free_slots(self) -> int:
        """How many jobs could start now."""
        free = self.concurrency - self._active
        if self.auth_dirs:
            free = min(free, len(self.auth_dirs) - len(self._auth_in_use))
        return max(free, 0)

    def has_slot(self) -> bool:
        """A new job could start now: below the limit, and a login free if logins are used."""
        if self._active >= self.concurrency:
            return False
        return not self.auth_dirs or self._free_auth_dir() is not None

    def acquire(self, *, force: bool = False, auth_dir: Path | None = None) -> Lease | None:
        """A lease to run a job now, or None if it must wait.

        ``force`` is for a container that is already running (adopted at start-up): it
        counts against the limits but is never refused.
        """
        if not force and not self.has_slot():
            return None
        login = auth_dir if auth_dir is not None else self._free_auth_dir()
        if self.auth_dirs and login is None:
            login = self.auth_dirs[0]  # forced: the adopted container already holds it
        if login is not None:
            self._auth_in_use.add(login)
        self._active += 1
        return Lease(auth_dir=login)

    def release(self, lease: Lease) -> None:
        if lease.auth_dir is not None:
            self._auth_in_use.discard(lease.auth_dir)
        self._active -= 1

    def _free_auth_dir(self) -> Path | None:
        return next((d for d in self.auth_dirs if d not in self._auth_in_use), None)
