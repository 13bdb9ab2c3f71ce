"""Reading files a job may have written (out/<id>/...), from the CLI or the daemon:
never following a link, never blocking on a fifo, never reading more than asked."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

RECORD_LIMIT = 1024 * 1024  # exit.json: the daemon's record is a few KiB


def open_regular(path: Path) -> int | None:
    """A read-only fd on ``path`` if it is a regular file (not through a link), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def read_regular(path: Path, limit: int) -> bytes | None:
    """At most ``limit`` bytes from the start of a regular file; None if it is not one."""
    fd = open_regular(path)
    if fd is None:
        return None
    try:
        return os.pread(fd, limit, 0)
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def read_whole(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes if it has at most ``limit`` (never a truncated copy)."""
    data = read_regular(path, limit + 1)
    return None if data is None or len(data) > limit else data


def read_tail(path: Path, limit: int) -> tuple[bytes, os.stat_result] | None:
    """The last ``limit`` bytes of a regular file, with its stat; None if not one."""
    fd = open_regular(path)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
        start = max(0, st.st_size - limit)
        return os.pread(fd, st.st_size - start, start), st
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def read_json_object(path: Path, limit: int = RECORD_LIMIT) -> dict[str, Any] | None:
    """The JSON object in a regular file, or None (missing, a link, too big, not JSON)."""
    data = read_whole(path, limit)
    if data is None:
        return None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
