"""Reading out/<id>/events.jsonl while the agent writes it (the daemon's step log,
``watcherd logs -f``, ``status``).

The agent writes this file, so it is read as untrusted input: never through a link, never
blocking on a fifo, at most so much per read, whole lines only, and a line longer than
any event is skipped rather than buffered. A new attempt of a job starts a new file
(out/<id>/ is made anew): the reader notices the new inode, or a file shorter than where
it was, and starts again from the top. A copy of the same file (out/<id>/ moved off
the job's own filesystem once its container exited) is read on from where it was: what
it read last is still there, at the same place.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcherd.util.safeio import open_regular, read_tail

READ_BYTES = 1024 * 1024  # per read; also the longest line kept
TAIL_BYTES = 16 * 1024  # what ``status`` looks at: the last events only
MARK_BYTES = 256  # the end of what was read, to know the same file in another place


class EventReader:
    """New whole events since the last ``read``."""

    def __init__(self, path: Path, from_end: bool = False) -> None:
        self.path = path
        self._from_end = from_end  # skip what is there at first sight (already seen)
        self._inode: tuple[int, int] | None = None  # (device, inode)
        self._mark = b""  # the last bytes before _offset
        self._offset = 0
        self._in_long_line = False  # skipping the rest of a line over READ_BYTES
        self.restarts = 0  # times the file was replaced or cut: a new attempt

    @property
    def offset(self) -> int:
        """How far the file has been read (whole lines, and skipped long ones)."""
        return self._offset

    def read(self) -> list[dict[str, Any]]:
        fd = open_regular(self.path)
        if fd is None:
            return []
        try:
            return self._read(fd)
        except OSError:
            return []
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _read(self, fd: int) -> list[dict[str, Any]]:
        st = os.fstat(fd)
        if self._inode is None:
            self._offset = st.st_size if self._from_end else 0
            seen = min(MARK_BYTES, self._offset)
            self._mark = os.pread(fd, seen, self._offset - seen)
        elif (
            (st.st_dev, st.st_ino) != self._inode or st.st_size < self._offset
        ) and not self._same_so_far(fd, st.st_size):
            self._offset, self._in_long_line, self._mark = 0, False, b""
            self.restarts += 1
        self._inode = (st.st_dev, st.st_ino)
        if st.st_size <= self._offset:
            return []
        data = os.pread(fd, min(READ_BYTES, st.st_size - self._offset), self._offset)
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) == READ_BYTES:  # one line longer than any event: skip it
                self._offset += len(data)
                self._mark = data[-MARK_BYTES:]
                self._in_long_line = True
            return []  # else the end of the line is not written yet
        self._offset += end + 1
        self._mark = (self._mark + data[: end + 1])[-MARK_BYTES:]
        lines = data[:end].split(b"\n")
        if self._in_long_line:
            lines, self._in_long_line = lines[1:], False  # the end of the skipped line
        return parse_lines(lines)

    def _same_so_far(self, fd: int, size: int) -> bool:
        """Whether this (other) file holds what was read, where it was read."""
        if not self._mark or size < self._offset:
            return False
        start = self._offset - len(self._mark)
        return os.pread(fd, len(self._mark), start) == self._mark


@dataclass(frozen=True)
class Tail:
    events: list[dict[str, Any]]
    modified: float  # the file's mtime: when the agent last did something


def read_tail_events(path: Path, limit: int = TAIL_BYTES) -> Tail | None:
    """The events in the last ``limit`` bytes of the file; None if there is no file."""
    found = read_tail(path, limit)
    if found is None:
        return None
    data, st = found
    lines = data.split(b"\n")
    if len(data) < st.st_size:
        lines = lines[1:]  # starts in the middle of a line
    return Tail(parse_lines(lines), st.st_mtime)


def read_all_events(path: Path) -> list[dict[str, Any]]:
    """Every whole event in the file, as it is now."""
    reader = EventReader(path)
    events: list[dict[str, Any]] = []
    while True:
        before = reader.offset
        events += reader.read()
        if reader.offset == before:
            return events


def parse_lines(lines: list[bytes]) -> list[dict[str, Any]]:
    events = []
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):  # the agent writes this file: any line at all
            continue  # a line cut by a crash, not JSON at all, or nested past the parser
        if isinstance(event, dict):
            events.append(event)
    return events
