"""One schedule's bookkeeping on disk, in the daemon's private folder:

    state/schedules/<id>/since.json            from when its slots count (first seen, last
                                               changed or resumed), and what it was then
    state/schedules/<id>/paused.json           present while the operator has it paused
    state/schedules/<id>/slots/<UTC>.json      one per slot handled: the exactly-once claim
    state/schedules/<id>/slots/<UTC>.dropped   its job is in the inbox
    state/schedules/<id>/slots/<UTC>-now-<hex>.json   a run-now

A slot's record is made by an exclusive rename (renameat2 RENAME_NOREPLACE, else link):
of two daemons, or one daemon before and after a restart, exactly one makes it; only that
one drops the slot's job. It holds an flock on the record from before the record has its
name until the job is in the inbox: a record without ``.dropped`` whose lock is free is a
crash between the two, which the next tick repairs from the job bytes in the record.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watcherd.spool.folders import Layout
from watcherd.util.fsutil import fsync_dir, rename_noreplace, write_atomic
from watcherd.util.safeio import read_json_object

STAMP = "%Y%m%dT%H%M%SZ"
_SLOT = re.compile(r"([0-9]{8}T[0-9]{6}Z)\.json")
_RECORD = re.compile(r"([0-9]{8}T[0-9]{6}Z)(-now-[0-9a-f]{6})?\.json")
KEEP_RECORDS = 500  # per schedule, newest first; older ones are pruned


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(STAMP)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, STAMP).replace(tzinfo=UTC)


@dataclass(frozen=True)
class SlotRecord:
    """What happened to one slot (or one run-now)."""

    key: str  # the record's file stem: the slot's UTC stamp, or <stamp>-now-<hex>
    schedule: str
    scheduled_for: str  # ISO UTC
    outcome: str  # dropped | skipped | missed | invalid
    reason: str
    kind: str  # "schedule" or "run-now"
    job_name: str | None
    created_at: str
    missed: int  # earlier slots passed over for it (catch-up: latest)
    dropped: bool  # its job reached the inbox
    job: str | None = None  # the job file's text (to repair a crash before the drop)

    @classmethod
    def from_json(cls, key: str, data: dict[str, Any], dropped: bool) -> SlotRecord | None:
        try:
            return cls(
                key=key, schedule=str(data["schedule"]), scheduled_for=str(data["scheduled_for"]),
                outcome=str(data["outcome"]), reason=str(data.get("reason", "")),
                kind=str(data.get("kind", "schedule")), job_name=data.get("job_name"),
                created_at=str(data.get("created_at", "")), missed=int(data.get("missed", 0)),
                dropped=dropped, job=data.get("job"),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None

    def to_json(self) -> bytes:
        fields = {
            "schedule": self.schedule, "scheduled_for": self.scheduled_for,
            "outcome": self.outcome, "reason": self.reason, "kind": self.kind,
            "job_name": self.job_name, "created_at": self.created_at, "missed": self.missed,
            "job": self.job,
        }  # fmt: skip
        return (json.dumps(fields, indent=1) + "\n").encode()


class Claim:
    """A record this process made (or took over), locked until its job is in the inbox."""

    def __init__(self, records: RecordFolder, key: str, fd: int) -> None:
        self.records, self.key, self.fd = records, key, fd

    def dropped(self) -> None:
        self.records.mark_dropped(self.key)
        self.release()

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class RecordFolder:
    """Records made exactly once: ``<key>.json`` by an exclusive rename, flocked by its
    maker from before it has its name until its job is dropped (``<key>.dropped``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def claim(self, key: str, data: bytes) -> Claim | None:
        """Make ``<key>.json`` with ``data``, exactly once: None if it exists already."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path / f".{key}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # before it has its name: nobody can take it
            os.write(fd, data)
            os.fsync(fd)
            try:
                rename_noreplace(tmp, self.path / f"{key}.json")
            except FileExistsError:
                tmp.unlink(missing_ok=True)
                os.close(fd)
                return None
        except BaseException:
            tmp.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        fsync_dir(self.path)
        return Claim(self, key, fd)

    def read(self, key: str) -> dict[str, Any] | None:
        return read_json_object(self.path / f"{key}.json")

    def is_dropped(self, key: str) -> bool:
        return (self.path / f"{key}.dropped").exists()

    def mark_dropped(self, key: str) -> None:
        path = self.path / f"{key}.dropped"
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        fsync_dir(self.path)

    def take_over(self, key: str) -> Claim | None:
        """The lock of a record whose maker is gone (a crash before its drop finished);
        None while its maker holds it, or when its job was dropped after all."""
        try:
            fd = os.open(self.path / f"{key}.json", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its maker is dropping it right now
            return None
        if self.is_dropped(key):
            os.close(fd)
            return None
        return Claim(self, key, fd)

    def keys(self, pattern: re.Pattern[str]) -> list[str]:
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return [name[:-5] for name in names if pattern.fullmatch(name)]

    def remove(self, key: str) -> None:
        for suffix in (".json", ".dropped"):
            (self.path / f"{key}{suffix}").unlink(missing_ok=True)


class ScheduleState:
    def __init__(self, layout: Layout, schedule_id: str) -> None:
        self.layout = layout
        self.id = schedule_id
        self.folder = layout.state / "schedules" / schedule_id
        self.slots = self.folder / "slots"
        self.store = RecordFolder(self.slots)

    def ensure(self) -> None:
        """Each level private: the CLI may be the first to write here (a pause)."""
        for folder in (self.layout.state, self.folder.parent, self.folder, self.slots):
            folder.mkdir(mode=0o700, exist_ok=True)

    # -- since: from when slots count ---------------------------------------------------

    def since(self, fingerprint: str, now: datetime) -> datetime:
        """When this schedule's slots start to count: when it was first seen, or last
        changed (another cron, zone, enabled), or resumed. Slots before are not due."""
        path = self.folder / "since.json"
        record = read_json_object(path) or {}
        when = record.get("since")
        if record.get("fingerprint") == fingerprint and isinstance(when, str):
            with contextlib.suppress(ValueError):
                return parse_stamp(when)
        self.set_since(fingerprint, now)
        return now

    def set_since(self, fingerprint: str, now: datetime) -> None:
        self.ensure()
        data = {"fingerprint": fingerprint, "since": stamp(now)}
        write_atomic(self.folder / "since.json", json.dumps(data).encode(), 0o600)

    # -- pause --------------------------------------------------------------------------

    def paused(self) -> dict[str, Any] | None:
        return read_json_object(self.folder / "paused.json")

    def pause(self, now: datetime, by: str) -> bool:
        """False when it was paused already."""
        if self.paused() is not None:
            return False
        self.ensure()
        data = {"paused_at": iso(now), "by": by}
        write_atomic(self.folder / "paused.json", json.dumps(data).encode(), 0o600)
        return True

    def resume(self, fingerprint: str, now: datetime) -> bool:
        """False when it was not paused. Slots that passed while paused are not run."""
        if self.paused() is None:
            return False
        self.set_since(fingerprint, now)  # first: a crash in between leaves it paused
        (self.folder / "paused.json").unlink(missing_ok=True)
        fsync_dir(self.folder)
        return True

    # -- slot records -------------------------------------------------------------------

    def newest_slot(self) -> datetime | None:
        """The newest cron slot handled (run, skipped or missed); run-nows do not count."""
        newest = None
        for key in self._keys():
            match = _SLOT.fullmatch(key + ".json")
            if match and (newest is None or key > newest):
                newest = key
        return None if newest is None else parse_stamp(newest)

    def records(self, limit: int | None = 20) -> list[SlotRecord]:
        """The newest records first (cron slots and run-nows by their time); all of them
        when ``limit`` is None."""
        keys = sorted(self._keys(), reverse=True)[:limit]
        found = []
        for key in keys:
            data = self.store.read(key)
            record = SlotRecord.from_json(key, data, self.store.is_dropped(key)) if data else None
            if record is not None:
                found.append(record)
        return found

    def claim(self, record: SlotRecord) -> Claim | None:
        """Make ``record`` this slot's, exactly once: None if another process made it."""
        return self.store.claim(record.key, record.to_json())

    def unfinished(self, limit: int | None = 5) -> Iterator[tuple[SlotRecord, Claim]]:
        """Records of a drop that never finished (a crash between the record and the
        drop), among the newest ``limit`` (None: all), each locked for the caller; a record
        whose maker still holds it is not."""
        for record in self.records(limit):
            if record.outcome != "dropped" or record.dropped:
                continue
            claim = self.store.take_over(record.key)
            if claim is not None:
                yield record, claim

    def prune(self, keep: int = KEEP_RECORDS) -> None:
        for key in sorted(self._keys(), reverse=True)[keep:]:
            self.store.remove(key)

    def _keys(self) -> list[str]:
        return self.store.keys(_RECORD)
