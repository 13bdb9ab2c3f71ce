"""Who may run now: the concurrency limit, and one job per refreshable login.

Jobs never share a workspace, so jobs on one repository run in parallel. A refreshable
login's token is single-use (Codex's ChatGPT login), so each of an agent's login dirs
serves one of that agent's jobs at a time (the daemon renews it, if due, before the job).
Only a job whose agent uses such a login takes one; every other job (another agent,
an API key, no auth) needs only a slot. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from watcherd.job.slots import Lease


@dataclass
class Scheduler:
    concurrency: int
    # agent -> the login dirs its jobs lease, one job each; an agent not named leases none
    logins: Mapping[str, Sequence[Path]] = field(default_factory=dict)
    _logins_in_use: set[Path] = field(default_factory=set)
    _active: int = 0

    @property
    def active(self) -> int:
        return self._active

    def free_slots(self) -> int:
        """How many jobs could start now, logins aside."""
        return max(self.concurrency - self._active, 0)

    def has_slot(self, agent: str | None = None) -> bool:
        """A job of ``agent`` could start now: below the limit, and one of its logins free
        if it uses them. ``None``: a job whose agent is not known yet (a slot is enough)."""
        if self._active >= self.concurrency:
            return False
        return agent is None or agent not in self.logins or self._free_login(agent) is not None

    def busy_logins(self) -> frozenset[str]:
        """The agents whose jobs would wait now for want of a free login."""
        return frozenset(a for a in self.logins if self._free_login(a) is None)

    def acquire(
        self, agent: str | None = None, *, force: bool = False, auth_dir: Path | None = None
    ) -> Lease | None:
        """A lease to run a job of ``agent`` now, or None if it must wait.

        ``force`` is for a container that is already running (adopted at start-up): it
        counts against the limits but is never refused; ``auth_dir`` is the login it holds.
        """
        if not force and not self.has_slot(agent):
            return None
        login = None
        if agent is not None and agent in self.logins:
            login = auth_dir if auth_dir is not None else self._free_login(agent)
            if login is None:
                login = self.logins[agent][0]  # forced: the adopted container already holds it
            self._logins_in_use.add(login)
        self._active += 1
        return Lease(auth_dir=login)

    def release(self, lease: Lease) -> None:
        if lease.auth_dir is not None:
            self._logins_in_use.discard(lease.auth_dir)
        self._active -= 1

    def _free_login(self, agent: str) -> Path | None:
        return next((d for d in self.logins[agent] if d not in self._logins_in_use), None)
