"""How much disk a job uses: its workspace, its out/<id>/ and its agent home.

Where its budget cannot be a filesystem of its own (watcherd/job/disk.py), it is polled
with this while the job runs (JobLife._wait), so a job can overshoot it by what it
writes between two measurements. Cheap enough to poll: one stat per entry, no reads.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

ENTRY_MIN_BYTES = 4096  # an empty file or a link still costs an inode and a block


def tree_bytes(paths: list[Path], limit: int) -> int:
    """Disk used under ``paths``: allocated blocks (sparse files count as written), at
    least one block per entry (a million empty files are not free), stopping early once
    past ``limit``. Walked through folder descriptors opened with O_NOFOLLOW, so a folder
    swapped for a link while it is measured leads nowhere."""
    total = 0
    stack: list[int] = []
    try:
        for path in paths:
            fd = _open_folder(str(path), None)
            if fd is not None:
                stack.append(fd)
        while stack and total <= limit:
            fd = stack.pop()
            try:
                total += _measure(fd, stack)
            finally:
                os.close(fd)
    finally:
        for fd in stack:
            os.close(fd)
    return total


def _measure(fd: int, stack: list[int]) -> int:
    total = 0
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            total += max(st.st_blocks * 512, ENTRY_MIN_BYTES)
            if stat.S_ISDIR(st.st_mode):
                child = _open_folder(entry.name, fd)
                if child is not None:
                    stack.append(child)
    return total


def _open_folder(name: str, parent: int | None) -> int | None:
    try:
        return os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
        )
    except OSError:  # gone, a link, not a folder, not ours to read
        return None
