"""Who may run now: the concurrency limit, and which login a job uses.

Jobs never share a workspace, so jobs on one repository run in parallel. A job whose
agent uses a login dir (Codex's ChatGPT login) is given the one of its agent's dirs that
the fewest running jobs use: the daemon keeps each login and renews it itself, so any
number of jobs may share one (several dirs spread them over several accounts). Every other
job (another agent, an API key, no auth) needs only a slot. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from watcherd.job.slots import Lease


@dataclass
class Scheduler:
    concurrency: int
    # agent -> the login dirs its jobs use; an agent not named uses none
    logins: Mapping[str, Sequence[Path]] = field(default_factory=dict)
    _login_users: Counter[Path] = field(default_factory=Counter)
    _active: int = 0

    @property
    def active(self) -> int:
        return self._active

    def free_slots(self) -> int:
        """How many jobs could start now."""
        return max(self.concurrency - self._active, 0)

    def has_slot(self) -> bool:
        return self._active < self.concurrency

    def acquire(
        self, agent: str | None = None, *, force: bool = False, auth_dir: Path | None = None
    ) -> Lease | None:
        """A lease to run a job of ``agent`` now, or None if it must wait for a slot.

        ``force`` is for a container that is already running (adopted at start-up): it
        counts against the limit but is never refused; ``auth_dir`` is the login it uses.
        """
        if not force and not self.has_slot():
            return None
        login = None
        if agent is not None and self.logins.get(agent):
            login = auth_dir if auth_dir is not None else self._least_used(agent)
            self._login_users[login] += 1
        self._active += 1
        return Lease(auth_dir=login)

    def release(self, lease: Lease) -> None:
        if lease.auth_dir is not None:
            self._login_users[lease.auth_dir] -= 1
            if self._login_users[lease.auth_dir] <= 0:
                del self._login_users[lease.auth_dir]
        self._active -= 1

    def _least_used(self, agent: str) -> Path:
        """Of the dirs the fewest jobs use, the first listed (min keeps the first)."""
        return min(self.logins[agent], key=self._login_users.__getitem__)
