"""Asking the daemon to publish: a small file in ``publish/requests/``, written under a
dot-name and renamed in (as jobs are dropped). The daemon's publisher takes each under an
flock, does it, writes the outcome into the job's exit.json and removes the file; a
request left by a crash is done at the next start. ``watcherd publish`` drops one and waits
for the outcome that names it; a job that asked to be published gets one when it is filed.

Only the daemon reads the credentials: whoever drops a request names a job and how to
publish it, nothing else, and the daemon checks the job's work as it would its own.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcherd.config.publish import PUBLISH_MODES
from watcherd.publish.record import FINAL_STATES, publish_dir, read_record
from watcherd.spool.jobid import is_job_id
from watcherd.util.fsutil import fsync_dir
from watcherd.util.safeio import read_json_object

MAX_REQUEST_BYTES = 4096


@dataclass(frozen=True)
class Request:
    job_id: str
    mode: str | None  # branch, draft, ready; None: the job's own publish: (or the config's)
    nonce: str  # names the outcome meant for this request
    by: str  # "job" (it asked, when it was filed) or "cli"


def requests_dir(root: Path) -> Path:
    return publish_dir(root) / "requests"


def drop_request(root: Path, job_id: str, mode: str | None, by: str) -> Request:
    if not is_job_id(job_id):
        raise ValueError(f"{job_id!r} is not a job id")
    if mode is not None and mode not in PUBLISH_MODES:
        raise ValueError(f"publish as {mode!r}: expected one of {', '.join(PUBLISH_MODES)}")
    request = Request(job_id, mode, secrets.token_hex(8), by)
    folder = requests_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{job_id}.{request.nonce}.json"
    tmp = folder / f".{name}.tmp"
    body = {"job_id": job_id, "as": mode, "nonce": request.nonce, "by": by,
            "at": time.time()}  # fmt: skip
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(body, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, folder / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(folder)
    return request


def listed(root: Path) -> list[Path]:
    """Requests waiting, oldest first."""
    try:
        entries = [entry for entry in os.scandir(requests_dir(root))
                   if entry.name.endswith(".json") and not entry.name.startswith(".")]  # fmt: skip
    except FileNotFoundError:
        return []
    stamped = []
    for entry in entries:
        try:
            stamped.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
        except FileNotFoundError:
            continue
    return [requests_dir(root) / name for _, name in sorted(stamped)]


def parse_request(path: Path) -> Request | None:
    """The request in a file, or None when it is not one (it is then removed)."""
    data: dict[str, Any] | None = read_json_object(path, MAX_REQUEST_BYTES)
    if data is None:
        return None
    job_id, mode, nonce, by = (data.get(k) for k in ("job_id", "as", "nonce", "by"))
    if not isinstance(job_id, str) or not is_job_id(job_id):
        return None
    if mode is not None and mode not in PUBLISH_MODES:
        return None
    if not isinstance(nonce, str) or not nonce.isalnum() or len(nonce) > 64:
        return None
    return Request(job_id, mode, nonce, by if by in ("job", "cli") else "cli")


def outcome_for(root: Path, job_id: str, nonce: str) -> dict[str, Any] | None:
    """The job's ``publish`` record once it is the final outcome of request ``nonce``."""
    record = read_record(root / "out" / job_id)
    publish = record.get("publish") if record else None
    if (
        isinstance(publish, dict)
        and publish.get("request") == nonce
        and publish.get("state") in FINAL_STATES
    ):
        return publish
    return None


def wait_for_outcome(
    root: Path, job_id: str, nonce: str, timeout: float | None, poll: float = 0.2
) -> dict[str, Any] | None:
    """``outcome_for`` as soon as there is one; None after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        found = outcome_for(root, job_id, nonce)
        if found is not None:
            return found
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(poll)
