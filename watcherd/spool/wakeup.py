"""Sleep until something changes in a few folders: inotify through ctypes, for the
commands that wait on a job (``wait``, ``logs -f``).

The events only wake the caller, who then looks at the folders again: the folders are
the truth. Callers watch *before* they look (so nothing that happens in between is
missed) and still look every few seconds, the safety net for anything inotify does not
see (a network filesystem, an exhausted inotify limit: then it simply polls).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import select
import time
from pathlib import Path
from types import TracebackType

# <sys/inotify.h>
_IN_MODIFY = 0x002
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_ONLYDIR = 0x01000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_FOLDER_EVENTS = (
    _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
)
POLL_SECONDS = 0.5  # how often to look when inotify is not available


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


class Wakeup:
    """``watch`` folders, then ``wait`` until one of them changes or a timeout passes."""

    def __init__(self) -> None:
        self._fd = -1
        self._libc = _libc()
        if self._libc is not None and hasattr(self._libc, "inotify_init1"):
            self._fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)

    @property
    def has_inotify(self) -> bool:
        return self._fd >= 0

    def watch(self, folder: Path) -> None:
        """Be woken by changes in ``folder`` (its entries, and writes to its files). Cheap
        to call again: a folder that was removed and made anew is watched anew. A missing
        folder is skipped; watch its parent to learn when it appears."""
        if self._fd < 0 or self._libc is None:
            return
        wd = self._libc.inotify_add_watch(
            self._fd, os.fsencode(folder), _FOLDER_EVENTS | _IN_ONLYDIR
        )
        if wd < 0 and ctypes.get_errno() not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
            # Out of watches (ENOSPC) or the like: fall back to polling for good.
            self.close()

    def wait(self, timeout: float) -> None:
        """Return when something changed in a watched folder, or after ``timeout``."""
        timeout = max(0.0, timeout)
        if self._fd < 0:
            time.sleep(min(timeout, POLL_SECONDS))
            return
        readable, _, _ = select.select([self._fd], [], [], timeout)
        if readable:
            self._drain()

    def _drain(self) -> None:
        while True:
            try:
                if not os.read(self._fd, 65536):
                    return
            except BlockingIOError:
                return
            except OSError:
                return

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Wakeup:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
