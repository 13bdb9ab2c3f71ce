"""How much disk a job uses: its workspace, its out/<id>/ and its agent home.

Polled while the job runs (see jobrun), so a job can overshoot its budget by what it
writes between two measurements. Cheap enough to poll: one stat per entry, no reads.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def tree_bytes(paths: list[Path], limit: int) -> int:
    """Disk used under ``paths`` (allocated blocks, so sparse files count as written),
    stopping early once past ``limit``. Links are not followed."""
    total = 0
    stack = [str(p) for p in paths]
    while stack:
        folder = stack.pop()
        try:
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
        if total > limit:
            break
    return total
