"""The outcome of publishing, as ``publish`` in the job's ``out/<id>/exit.json``: written by
the daemon alone (the job's container is gone by then), atomically, under a lock per job
that every daemon on the root takes, so two publishers never interleave.

    "publish": {"state": "published", "as": "draft", "branch": "watcherd/fix-42",
                "commit": "<what the remote branch is at>", "pushed": true,
                "url": "https://github.com/acme/widgets/pull/7", "number": 7,
                "remote": "https://github.com/acme/widgets", "reason": "...", ...}

States: ``pending`` (asked, not done yet), ``published`` (the pull request is open),
``pushed`` (publish: branch), ``refused`` (a check failed: nothing was pushed), ``failed``
(the forge, the network or the credential; after the retries), ``skipped`` (nothing to
publish: the job did not end done, or made no commits).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from watcherd.repo.url import redact
from watcherd.util.fsutil import write_atomic
from watcherd.util.safeio import read_json_object

FINAL_STATES = ("published", "pushed", "refused", "failed", "skipped")
OK_STATES = ("published", "pushed")


def publish_dir(root: Path) -> Path:
    return root / "publish"


@contextlib.contextmanager
def job_lock(root: Path, job_id: str) -> Iterator[None]:
    """An flock on publish/locks/<id>.lock: one publisher of a job at a time, whichever
    daemon; released when its process dies."""
    folder = publish_dir(root) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{job_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_record(out_dir: Path) -> dict[str, Any] | None:
    return read_json_object(out_dir / "exit.json")


def write_publish(out_dir: Path, publish: dict[str, Any]) -> dict[str, Any] | None:
    """exit.json with ``publish`` set to this, written whole or not at all; the record
    written, or None when the job has no record to add it to."""
    record = read_record(out_dir)
    if record is None:
        return None
    if isinstance(publish.get("reason"), str):
        publish = {**publish, "reason": redact(publish["reason"])[:2000]}
    record["publish"] = publish
    folder = out_dir.stat()
    write_atomic(
        out_dir / "exit.json",
        (json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n").encode(),
        owner=(folder.st_uid, folder.st_gid),
    )
    return record
