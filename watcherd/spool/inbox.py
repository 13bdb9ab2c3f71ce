"""What the daemon knows of the inbox, kept up to date by events and by rescans.

Dispatch must not cost more with a longer queue: an event updates the one name it is
about, a rescan (every rescan_seconds, and when the watcher had to restart) rebuilds
everything, and the files to claim come out of a heap, oldest first.

A job file is complete, and may be claimed, when

- it was renamed into the inbox (the documented way, and what ``submit`` does): at once;
- or its writer closed it after writing (the kernel's close-after-write event);
- or, for files known only from a scan, its inode, size and mtime have not changed for
  ``settle_seconds``: watched from when it is seen, or at once when its ctime (which every
  write and every change of its metadata sets, and no writer can set back) is already
  that old, as it is for a queue found at start-up;

and, whichever of these, no process has it open for writing (``Spool.has_writer``). A
writer that pauses with the file open is never claimed early.

Pure bookkeeping over (name, what happened, stat) and a clock: the spool does the I/O.
"""

from __future__ import annotations

import enum
import heapq
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from watcherd.spool.filters import is_job_name
from watcherd.spool.folders import InboxEntry, Signature


class Hint(enum.Enum):
    """What an event says about a name."""

    MOVED_IN = "moved in"  # complete by construction
    WRITTEN = "written"  # closed after writing
    CHANGED = "changed"  # created or modified: maybe still being written
    GONE = "gone"


@dataclass
class _Known:
    signature: Signature
    mtime_ns: int
    complete: bool
    ready_at: float  # when a file that is not complete counts as settled


Stat = Callable[[str], InboxEntry | None]  # the inbox entry for a name, None if gone


class Inbox:
    def __init__(
        self, settle_seconds: float, stat: Stat, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.settle_seconds = settle_seconds
        self._stat = stat
        self._wall_clock = wall_clock  # the clock file times are on (ctime)
        self._files: dict[str, _Known] = {}
        # Heaps; an entry that no longer matches its file is stale and skipped.
        self._ready: list[tuple[int, str]] = []  # (mtime_ns, name) of complete files
        self._settling: list[tuple[float, str]] = []  # (ready_at, name) of the others
        self._specials: dict[str, InboxEntry] = {}  # links, folders, fifos: to be refused

    def __len__(self) -> int:
        return len(self._files)

    # -- what happened -------------------------------------------------------------------

    def note(self, hints: Iterable[tuple[str, Hint]], now: float) -> None:
        for name, hint in hints:
            if not is_job_name(name):
                continue
            if hint is Hint.GONE:
                self.forget(name)
                continue
            entry = self._stat(name)
            if entry is None:
                self.forget(name)
            else:
                self._see(entry, now, complete=hint in (Hint.MOVED_IN, Hint.WRITTEN))

    def rescan(self, entries: Iterable[InboxEntry], now: float) -> None:
        """The whole inbox, as a scan found it: names not in it are forgotten."""
        seen = set()
        for entry in entries:
            seen.add(entry.name)
            self._see(entry, now, complete=False)
        for name in [n for n in self._files if n not in seen]:
            self.forget(name)
        for name in [n for n in self._specials if n not in seen]:
            del self._specials[name]
        self._compact()

    def forget(self, name: str) -> None:
        self._files.pop(name, None)
        self._specials.pop(name, None)

    def being_written(self, name: str, now: float) -> None:
        """A writer still has it open: wait for its close, or a settle period from now."""
        known = self._files.get(name)
        if known is not None:
            known.complete = False
            self._settle_from(name, known, now)

    def _see(self, entry: InboxEntry, now: float, complete: bool) -> None:
        if not entry.is_regular:
            self._files.pop(entry.name, None)
            self._specials[entry.name] = entry
            return
        known = self._files.get(entry.name)
        if known is not None and known.signature == entry.signature:
            if complete and not known.complete:  # closed after writing, unchanged since
                known.complete = True
                heapq.heappush(self._ready, (known.mtime_ns, entry.name))
            return
        if not complete and self._unchanged_since(entry) >= self.settle_seconds:
            complete = True  # settled before we saw it: nothing to wait for
        known = _Known(entry.signature, entry.mtime_ns, complete, ready_at=now)
        self._files[entry.name] = known
        if complete:
            heapq.heappush(self._ready, (known.mtime_ns, entry.name))
        else:
            self._settle_from(entry.name, known, now)

    def _unchanged_since(self, entry: InboxEntry) -> float:
        """Seconds since the file last changed, by its ctime; 0 when unknown."""
        if not entry.ctime_ns:
            return 0.0
        return self._wall_clock() - entry.ctime_ns / 1e9

    def _settle_from(self, name: str, known: _Known, now: float) -> None:
        known.ready_at = now + self.settle_seconds
        heapq.heappush(self._settling, (known.ready_at, name))

    # -- what to do --------------------------------------------------------------------

    def take_specials(self) -> list[InboxEntry]:
        specials, self._specials = list(self._specials.values()), {}
        return specials

    def ready(self, now: float, limit: int) -> list[str]:
        """Up to ``limit`` complete files, oldest first. They stay known until claimed
        (``forget``) or found still open for writing (``being_written``)."""
        self._promote_settled(now)
        found: list[str] = []
        seen: set[str] = set()
        while self._ready and len(found) < limit:
            mtime_ns, name = heapq.heappop(self._ready)
            known = self._files.get(name)
            if known is None or known.mtime_ns != mtime_ns or not known.complete:
                continue  # stale
            if name in seen:
                continue
            seen.add(name)
            found.append(name)
        for name in found:
            heapq.heappush(self._ready, (self._files[name].mtime_ns, name))
        return found

    def next_deadline(self, now: float) -> float | None:
        """When the earliest file still settling may be ready (to time the next look)."""
        while self._settling:
            ready_at, name = self._settling[0]
            known = self._files.get(name)
            if known is None or known.complete or known.ready_at != ready_at:
                heapq.heappop(self._settling)  # stale
                continue
            return max(ready_at, now)
        return None

    def _promote_settled(self, now: float) -> None:
        while self._settling and self._settling[0][0] <= now:
            ready_at, name = heapq.heappop(self._settling)
            known = self._files.get(name)
            if known is not None and not known.complete and known.ready_at == ready_at:
                known.complete = True  # unchanged for settle_seconds
                heapq.heappush(self._ready, (known.mtime_ns, name))

    def _compact(self) -> None:
        """Drop stale heap entries now and then: the heaps stay the size of the inbox."""
        if len(self._ready) > 2 * len(self._files) + 64:
            self._ready = [(k.mtime_ns, n) for n, k in self._files.items() if k.complete]
            heapq.heapify(self._ready)
        if len(self._settling) > 2 * len(self._files) + 64:
            self._settling = [(k.ready_at, n) for n, k in self._files.items() if not k.complete]
            heapq.heapify(self._settling)
