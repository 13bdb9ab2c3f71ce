"""Wake the main loop when the inbox changes, with what changed. Events are hints; the
folder is the truth.

The watchdog handler only records (name, hint) and sets an Event: any work done in a
handler that raises would silently kill the observer thread. The main loop rescans on a
timer too, and restarts the observer if it died, because inotify drops events on
overflow.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

from watcherd.spool.inbox import Hint

log = logging.getLogger("watcherd.watch")

# watchdog holds every rename-out of the folder for `delay` (0.5 s), in order, waiting for
# its rename-in: each claim's move out of inbox/ held up every later inbox event by half a
# second (measured: 190 ms of the 216 ms the daemon added to drop -> container start). The
# two events of one rename reach the same read of the inotify queue, so 10 ms is plenty.
MOVE_PAIRING_SECONDS = 0.01


_HINTS = {
    "created": Hint.CHANGED,
    "modified": Hint.CHANGED,
    "closed": Hint.WRITTEN,  # IN_CLOSE_WRITE: a writer is done with it
    "deleted": Hint.GONE,
}


class _Record(FileSystemEventHandler):
    def __init__(self, hints: deque[tuple[str, Hint]], wake: threading.Event) -> None:
        self._hints = hints
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if event.event_type == "moved":
            self._hints.append((_name(event.src_path), Hint.GONE))
            self._hints.append((_name(event.dest_path), Hint.MOVED_IN))
        elif event.event_type in _HINTS:  # not opened / closed_no_write: no news
            self._hints.append((_name(event.src_path), _HINTS[event.event_type]))
        else:
            return
        self._wake.set()


def _name(path: bytes | str) -> str:
    return os.path.basename(os.fsdecode(path))


class InboxWatcher:
    def __init__(self, inbox: Path, wake: threading.Event) -> None:
        self._inbox = inbox
        self._wake = wake
        self._observer: Any = None
        self._hints: deque[tuple[str, Hint]] = deque()

    def drain(self) -> list[tuple[str, Hint]]:
        """What happened since the last call, in order."""
        drained = []
        while self._hints:
            drained.append(self._hints.popleft())
        return drained

    def start(self) -> None:
        InotifyMoveEventGrouper.delay = MOVE_PAIRING_SECONDS  # read when the watch is made
        observer = Observer()
        observer.daemon = True
        observer.schedule(_Record(self._hints, self._wake), str(self._inbox), recursive=False)
        observer.start()
        self._observer = observer

    def ensure_alive(self) -> bool:
        """Restart a dead observer; True if it had died (the caller should rescan)."""
        if self._observer is not None and self._observer.is_alive():
            return False
        log.warning("inbox watcher was not running; restarting it and rescanning")
        self.stop()
        self.start()
        return True

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            if self._observer.is_alive():
                self._observer.join(timeout=5)
            self._observer = None
