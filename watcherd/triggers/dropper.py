"""Dropping a job the daemon made itself (a schedule's, a hook's) into the inbox under an
exact name, with its origin recorded for that very file before it appears.

Like watcherd.spool.drop: written under a dot-name the daemon ignores, then renamed in,
never replacing. Unlike it, a taken name is an error, not a reason to pick another: the
name was recorded before the drop, so that a crash in between can be repaired.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from watcherd.spool.folders import Layout
from watcherd.spool.origin import write_origin
from watcherd.util.fsutil import fsync_dir, rename_noreplace


def drop_exact(layout: Layout, name: str, data: bytes, origin: Mapping[str, str]) -> Path:
    """``inbox/<name>`` with ``data``, its origin on record; FileExistsError if taken."""
    inbox = layout.inbox
    tmp = inbox / f".{name}.{secrets.token_hex(4)}.tmp"
    with tmp.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
        stat = os.fstat(handle.fileno())
    try:
        write_origin(layout, name, stat, origin)
        rename_noreplace(tmp, inbox / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(inbox)
    return inbox / name
