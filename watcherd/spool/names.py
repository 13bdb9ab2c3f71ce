"""Dropped names to job ids: ``index/<name>``, one id a line, newest last.

A job dropped as ``fix-42.yaml`` becomes ``running/20261126T210000Z-fix-42-1a2b3c.yaml``;
this index finds it again by the name, in O(1), however many jobs there are. Names are
reused (``job.yaml`` is submit's default): the newest id wins, older ones stay reachable
by their id.

The spool appends at claim time, after the state file and before the job file leaves
the inbox: a job that exists in running/, done/ or failed/ is always in the index.
Appending one line in one write (O_APPEND) needs no lock between several daemons on one
root. A crash can leave an id whose claim never happened (readers skip ids without a
job file) or half a line (readers keep only whole ids; the next append starts a new
line). Readers look at the last few KiB only, so a name used a million times costs what
a new one does.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from watcherd.spool.jobid import is_job_id
from watcherd.util.fsutil import fsync_dir

TAIL_BYTES = 4096  # about 120 ids: the newest ones are all a lookup needs


class NameIndex:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def record(self, name: str, job_id: str) -> None:
        """Append ``job_id`` as the newest job dropped as ``name``; durable on return."""
        path = self.folder / name
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:  # a root laid out before the index existed
            self.folder.mkdir(mode=0o755, exist_ok=True)
            fd = os.open(path, flags, 0o644)
        try:
            size = os.fstat(fd).st_size
            # A crash in the middle of an earlier append left a line without its end.
            cut = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            os.write(fd, (b"\n" if cut else b"") + job_id.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if size == 0:
            fsync_dir(self.folder)  # a new name's file must survive a power cut too

    def ids(self, name: str) -> list[str]:
        """The ids of the jobs dropped as ``name``, oldest first (the newest ~100 only);
        empty for a name never claimed."""
        if not name or "/" in name or "\0" in name or name in (".", ".."):
            return []
        try:
            fd = os.open(
                self.folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            )
        except OSError:
            return []  # no such name, or something other than an index file
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return []
            start = max(0, st.st_size - TAIL_BYTES)
            data = os.pread(fd, st.st_size - start, start)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        lines = data.split(b"\n")
        if start > 0:
            lines = lines[1:]  # the first line read may be the end of a longer one
        return [
            text for text in (line.decode("ascii", "replace").strip() for line in lines)
            if is_job_id(text)
        ]  # fmt: skip
