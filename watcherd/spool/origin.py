"""Where a job came from, when the daemon itself made it: a schedule's slot, an inbound
hook's delivery. Kept beside the job, never in it: ``state/origin/<name>.json`` (the
daemon's private folder), bound to the inode of the file dropped under that name.

A job file cannot claim to be from a schedule: no key of it says so, and the record only
counts for the very file it was written for (the claim renames that inode into running/,
and a job file is never deleted, so no other file gets its number while it lives). A user
who drops a file under a scheduled job's name gets a file with another inode, and
nothing of the schedule's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from watcherd.spool.folders import Claimed, Layout
from watcherd.util.fsutil import write_atomic
from watcherd.util.safeio import read_json_object

# What an origin may say, each a short string: exit.json and notifications carry them.
FIELDS = ("schedule", "scheduled_for", "trigger", "hook", "delivery")
_VALUE = re.compile(r"[\x20-\x7e]{1,200}")


def folder(layout: Layout) -> Path:
    return layout.state / "origin"


def write_origin(
    layout: Layout, name: str, stat: os.stat_result, fields: Mapping[str, str]
) -> None:
    """Record ``fields`` for the file ``stat`` describes, to be dropped as ``name``; before
    it is in the inbox, so that it is there whenever the job is claimed."""
    record = {key: value for key, value in fields.items() if key in FIELDS}
    record["_inode"] = f"{stat.st_dev}:{stat.st_ino}"
    target = folder(layout)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(target / f"{name}.json", json.dumps(record).encode(), 0o600)


def read_origin(layout: Layout, job: Claimed) -> dict[str, str]:
    """The origin recorded for this very job file, or {} (a job someone dropped)."""
    if "/" in job.source_name or job.source_name.startswith("."):
        return {}
    record = read_json_object(folder(layout) / f"{job.source_name}.json")
    if not record:
        return {}
    try:
        st = os.fstat(job.fd) if job.fd >= 0 else os.stat(job.path, follow_symlinks=False)
    except OSError:
        return {}
    if record.get("_inode") != f"{st.st_dev}:{st.st_ino}":
        return {}
    return {
        key: value
        for key, value in record.items()
        if key in FIELDS and isinstance(value, str) and _VALUE.fullmatch(value)
    }


def prune_origins(layout: Layout, older_than: float) -> None:
    """Records of jobs dropped long ago (their exit.json has what they said)."""
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        for path in folder(layout).iterdir():
            with contextlib.suppress(FileNotFoundError):
                if now - path.stat().st_mtime > older_than:
                    path.unlink()
