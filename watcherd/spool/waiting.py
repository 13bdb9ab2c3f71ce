"""Following one job from the inbox to its end, and ``watcherd wait``'s exit codes.

A queued job (a name in the inbox) is followed to its claim by the inode of its inbox
entry (see lookup.py), then to done/ or failed/. The daemon writes exit.json before it
moves the job file there, so a job file in done/ or failed/ means its record is final.
The waiting is done by inotify on the few folders that matter at each stage, with a look
every couple of seconds as a safety net.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcherd.spool.folders import Layout
from watcherd.spool.lookup import JobRef, Place, find_claim, locate, newest_claim
from watcherd.spool.names import NameIndex
from watcherd.spool.wakeup import Wakeup
from watcherd.util.safeio import read_json_object

SAFETY_POLL_SECONDS = 2.0
# A job file in failed/ without its record: a daemon that died between the two (a
# symlink refused from the inbox is moved first, its record written just after).
MISSING_RECORD_GRACE_SECONDS = 5.0


class WaitExit(enum.IntEnum):
    """``watcherd wait``'s exit status. 2 stays argparse's and the config's (usage)."""

    DONE = 0
    FAILED = 1
    JOB_TIMEOUT = 3  # the job hit its own timeout
    INVALID = 4  # the job file was refused
    UNKNOWN = 5  # no job by that name or id (or it left the inbox without a claim)
    CANCELLED = 6  # someone cancelled it (watcherd cancel, the API)
    WAIT_TIMEOUT = 124  # wait's own --timeout passed first (as timeout(1) does)

    @classmethod
    def for_state(cls, state: object) -> WaitExit:
        return _BY_STATE.get(str(state), cls.FAILED)


_BY_STATE = {
    "done": WaitExit.DONE,
    "failed": WaitExit.FAILED,
    "timeout": WaitExit.JOB_TIMEOUT,
    "invalid": WaitExit.INVALID,
    "cancelled": WaitExit.CANCELLED,
}


@dataclass(frozen=True)
class Ended:
    job_id: str
    record: dict[str, Any]

    @property
    def exit_code(self) -> WaitExit:
        return WaitExit.for_state(self.record.get("state"))


@dataclass(frozen=True)
class NotYet:
    """Wait's own timeout passed; where the job was then."""

    ref: JobRef


@dataclass(frozen=True)
class Lost:
    """The job is gone: removed from the inbox before a claim, or its files deleted."""

    ref: JobRef


class JobWatch:
    """Where one job is now, looked up again on every ``refresh``."""

    def __init__(self, layout: Layout, ref: JobRef) -> None:
        self.layout = layout
        self.ref = ref
        self._finished_since: float | None = None
        # Claims of this name already made when we started: not ours.
        self._earlier: set[str] = set()
        if ref.job_id is None and ref.name is not None:
            self._earlier = {
                job_id
                for job_id in NameIndex(layout.index).ids(ref.name)
                if locate(layout, job_id) is not None
            }

    def folders(self) -> list[Path]:
        """The folders whose changes may move this job on."""
        layout = self.layout
        if self.ref.job_id is None:
            return [layout.inbox, layout.index, layout.running, layout.done, layout.failed]
        return [
            layout.running, layout.done, layout.failed, layout.out,
            layout.out_dir(self.ref.job_id),
        ]  # fmt: skip

    def refresh(self) -> JobRef | None:
        """Where the job is now; None if it is gone."""
        ref = self.ref
        if ref.job_id is not None:
            place = locate(self.layout, ref.job_id)
            if place is None:
                return None
            self.ref = JobRef(place, ref.job_id, ref.name)
            return self.ref
        assert ref.name is not None and ref.inode is not None
        claimed = find_claim(self.layout, ref.name, ref.inode)
        if claimed is None:
            try:
                inode = os.lstat(self.layout.inbox / ref.name).st_ino
            except OSError:
                inode = None
            if inode is not None:  # still queued (maybe rewritten: then as its new inode)
                self.ref = JobRef(Place.QUEUED, None, ref.name, inode)
                return self.ref
            # Claimed as another inode (replaced just before the claim), or removed.
            claimed = find_claim(self.layout, ref.name, ref.inode) or newest_claim(
                self.layout, ref.name, self._earlier
            )
            if claimed is None:
                return None
        self.ref = JobRef(locate(self.layout, claimed) or Place.RUNNING, claimed, ref.name)
        return self.ref

    def ended(self) -> Ended | None:
        """The job's exit record, once it is finished."""
        ref = self.ref
        if ref.job_id is None or not ref.place.finished:
            return None
        record = read_json_object(self.layout.out_dir(ref.job_id) / "exit.json")
        if record is not None and record.get("job_id") == ref.job_id:
            return Ended(ref.job_id, record)
        now = time.monotonic()
        if self._finished_since is None:
            self._finished_since = now
        if now - self._finished_since < MISSING_RECORD_GRACE_SECONDS:
            return None
        state = "done" if ref.place is Place.DONE else "failed"
        reason = "the job file was moved but its exit.json was never written"
        return Ended(ref.job_id, {"job_id": ref.job_id, "job_file": ref.name, "state": state,
                                  "reason": reason})  # fmt: skip


def wait_for_end(layout: Layout, ref: JobRef, timeout: float | None) -> Ended | NotYet | Lost:
    """Block until the job ends, is gone, or ``timeout`` seconds have passed."""
    watch = JobWatch(layout, ref)
    deadline = None if timeout is None else time.monotonic() + timeout
    with Wakeup() as wakeup:
        armed: list[Path] = []
        while True:
            armed = watch.folders()
            for folder in armed:  # before looking: a change from now on wakes us
                wakeup.watch(folder)
            current = watch.refresh()
            if current is None:
                return Lost(watch.ref)
            ended = watch.ended()
            if ended is not None:
                return ended
            if watch.folders() != armed:
                continue  # it moved on (claimed): watch where it is now, then look again
            pause = SAFETY_POLL_SECONDS
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return NotYet(current)
                pause = min(pause, remaining)
            if current.place.finished:
                pause = min(pause, 0.5)  # its record is due any moment
            wakeup.wait(pause)
