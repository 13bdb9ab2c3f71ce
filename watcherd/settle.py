"""Not claiming a file that is still being written.

Events say *that* something changed, not that the writer is done. A file is
ready when its size, mtime and inode have not changed for ``settle_seconds``.
Pure logic over (name, signature, now) so it is tested with a fake clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

Signature = tuple[int, int, int]  # (inode, size, mtime_ns)


@dataclass
class SettleTracker:
    settle_seconds: float
    _seen: dict[str, tuple[Signature, float]] = field(default_factory=dict)

    def observe(self, entries: Iterable[tuple[str, Signature]], now: float) -> list[str]:
        """Record what a scan saw; return the names that have been stable long enough.

        Names not in this scan are forgotten, so a file that comes back starts over.
        """
        ready: list[str] = []
        current: dict[str, tuple[Signature, float]] = {}
        for name, signature in entries:
            previous = self._seen.get(name)
            since = previous[1] if previous and previous[0] == signature else now
            current[name] = (signature, since)
            if now - since >= self.settle_seconds:
                ready.append(name)
        self._seen = current
        return ready

    def next_deadline(self, now: float) -> float | None:
        """When the earliest file still settling may be ready (to time the next scan)."""
        pending = [
            since + self.settle_seconds
            for _, since in self._seen.values()
            if since + self.settle_seconds > now
        ]
        return min(pending, default=None)

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)

    def __len__(self) -> int:
        """Files the last scan saw and nobody claimed since: the inbox, as far as we know."""
        return len(self._seen)
