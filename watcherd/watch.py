"""Wake the main loop when the inbox changes. Events are hints; the folder is the truth.

The watchdog handler only sets an Event: any work done in a handler that raises
would silently kill the observer thread. The main loop rescans on a timer too,
and restarts the observer if it died, because inotify drops events on overflow.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("watcherd.watch")


class _Wake(FileSystemEventHandler):
    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Opened/read events carry no news; everything else (close-write, moved in,
        # created, deleted, modified) may.
        if event.event_type not in ("opened", "closed_no_write"):
            self._wake.set()


class InboxWatcher:
    def __init__(self, inbox: Path, wake: threading.Event) -> None:
        self._inbox = inbox
        self._wake = wake
        self._observer: Any = None

    def start(self) -> None:
        observer = Observer()
        observer.daemon = True
        observer.schedule(_Wake(self._wake), str(self._inbox), recursive=False)
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
