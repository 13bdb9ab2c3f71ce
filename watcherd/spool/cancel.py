"""Cancel requests: a file under ``cancel/`` that whichever daemon owns the job acts on.

A request is on disk, not a message to one process, so it holds across several daemons on
one root and across a restart: the daemon running the job (or the one that adopts it after
a crash) sees it within a second; a queued job's request names the inbox entry (its name
and inode, so a later job dropped under the same name is not cancelled by it), and the
daemon that claims that entry files it as cancelled instead of running it. A request is
dropped when its job is filed, and a stale one (its job ended first) at the next rescan.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from watcherd.spool.filters import is_job_name
from watcherd.spool.folders import Layout
from watcherd.spool.jobid import is_job_id
from watcherd.util.fsutil import write_atomic
from watcherd.util.safeio import read_json_object

MAX_BY = 200  # characters of "who asked" kept
NAME_MAX = 255  # bytes of one file name (Linux)
# Bytes of one request file: what request writes is under 5 KiB even at its largest (a
# name of NAME_MAX escaped bytes, "by" of MAX_BY astral characters, all as JSON escapes).
# The daemon reads every request twice a second: a bigger file is none, and costs nothing.
REQUEST_LIMIT = 8192


@dataclass(frozen=True)
class CancelRequest:
    by: str  # who asked: "alice (cli)", "token ci-bot (api)", ...
    at: float  # when, seconds since the epoch
    job_id: str | None = None  # a claimed job's id
    name: str | None = None  # or a queued job's inbox name ...
    inode: int | None = None  # ... and the inode it had there

    @property
    def key(self) -> str:
        if self.job_id is not None:
            return self.job_id
        # An inbox name need not be UTF-8: os.listdir gives its bytes as surrogate escapes.
        entry = f"{self.name}\0{self.inode}".encode("utf-8", "surrogateescape")
        digest = hashlib.sha256(entry).hexdigest()[:24]
        return f"queued-{digest}"


class CancelBook:
    """The requests under one root's ``cancel/`` folder."""

    def __init__(self, layout: Layout) -> None:
        self.folder = layout.cancel

    def request(self, request: CancelRequest) -> bool:
        """Record a request; False if one for the same job is there already (the first
        asker stays on record)."""
        self.folder.mkdir(exist_ok=True)
        path = self._path(request.key)
        if self._read(path) is not None:
            return False
        # Nothing there, or something the daemon ignores (a link, junk): replaced (a rename
        # over it, never a write through it), else the job would never be cancelled.
        write_atomic(path, json.dumps(asdict(request)).encode(), 0o644)
        return True

    def for_job(self, job_id: str) -> CancelRequest | None:
        """The request for a claimed job, if any: one stat while there is none."""
        return self._read(self._path(job_id))

    def queued(self) -> Iterator[CancelRequest]:
        """Requests that name an inbox entry (a queued job)."""
        with contextlib.suppress(FileNotFoundError):
            for path in self.folder.glob("queued-*.json"):
                request = self._read(path)
                if request is not None:
                    yield request

    def for_entry(self, name: str, inode: int) -> CancelRequest | None:
        """The request for the inbox entry ``name`` with this inode, if any."""
        key = CancelRequest(by="", at=0, name=name, inode=inode).key
        return self._read(self._path(key))

    def all(self) -> Iterator[CancelRequest]:
        with contextlib.suppress(FileNotFoundError):
            for path in self.folder.glob("*.json"):
                request = self._read(path)
                if request is not None:
                    yield request

    def drop(self, request_or_id: CancelRequest | str) -> None:
        key = request_or_id if isinstance(request_or_id, str) else request_or_id.key
        self._path(key).unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def _read(self, path: Path) -> CancelRequest | None:
        try:
            data = read_json_object(path, REQUEST_LIMIT)
        except (OSError, ValueError):
            return None
        if data is None:
            return None
        request = _request_from(data)
        # cancel/ is writable by everyone who may submit: a file filed under another key
        # than its own is forged (and dropping it by its key would never remove it).
        if request is None or path.name != f"{request.key}.json":
            return None
        return request


def _request_from(data: dict[str, object]) -> CancelRequest | None:
    """Strictly what ``request`` writes; anything else is not a request."""
    by, at, job_id, name, inode = (data.get(k) for k in ("by", "at", "job_id", "name", "inode"))
    if not isinstance(by, str) or not isinstance(at, int | float):
        return None
    if job_id is not None and not (isinstance(job_id, str) and is_job_id(job_id)):
        return None
    if job_id is None and not (isinstance(name, str) and _is_inbox_name(name)
                               and isinstance(inode, int)):  # fmt: skip
        return None
    # Who asked goes into the daemon's log, exit.json and notifications: one printable line.
    by = "".join(ch for ch in by if ch.isprintable())
    return CancelRequest(
        by=by[:MAX_BY], at=float(at), job_id=job_id,
        name=name if isinstance(name, str) else None,
        inode=inode if isinstance(inode, int) else None,
    )  # fmt: skip


def _is_inbox_name(name: str) -> bool:
    """One job file's name in the inbox, never a path: the daemon claims what a queued
    request names, and "../state/tokens.yaml" would be a rename from anywhere."""
    try:  # a name no folder can hold (a lone surrogate, over NAME_MAX) raised in lstat()
        encoded = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return (is_job_name(name) and "/" not in name and "\0" not in name
            and not name.startswith(".") and len(encoded) <= NAME_MAX)  # fmt: skip


def new_request(by: str, job_id: str | None = None, name: str | None = None,
                inode: int | None = None) -> CancelRequest:  # fmt: skip
    return CancelRequest(by=by[:MAX_BY], at=time.time(), job_id=job_id, name=name, inode=inode)


def inode_of(path: Path) -> int | None:
    try:
        return os.lstat(path).st_ino
    except FileNotFoundError:
        return None
