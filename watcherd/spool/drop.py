"""Dropping bytes into the inbox as a job file, atomically: the daemon never sees half a
file, and a name already taken is never replaced."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from watcherd.util.fsutil import fsync_dir, rename_noreplace


@dataclass(frozen=True)
class Dropped:
    path: Path
    # The file's, known before it is in the inbox: a claim keeps it (find_claim), so the
    # job is found by it even when a daemon claims it before the dropper looks.
    inode: int


def drop(inbox: Path, name: str, data: bytes) -> Dropped:
    """Write under a dot-name the daemon ignores, then rename in: it never sees half a file.
    A name already taken gets a suffix rather than replacing another job."""
    tmp = inbox / f".{name}.{secrets.token_hex(4)}.tmp"
    with tmp.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
        inode = os.fstat(handle.fileno()).st_ino
    target = inbox / name
    for _ in range(100):
        try:
            rename_noreplace(tmp, target)
            break
        except FileExistsError:
            stem, dot, suffix = name.rpartition(".")
            target = inbox / f"{stem}-{secrets.token_hex(3)}{dot}{suffix}"
    else:  # pragma: no cover - 100 random collisions
        tmp.unlink()
        raise FileExistsError(target)
    fsync_dir(inbox)
    return Dropped(target, inode)
