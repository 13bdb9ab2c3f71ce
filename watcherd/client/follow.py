"""``watcherd logs -f``: a job's progress as it happens, until it ends.

Follows the job like ``wait`` does (from the inbox to its claim, then to done/ or
failed/) and, once it has an id, its out/<id>/events.jsonl, woken by inotify on out/<id>/
when Codex appends to it. A new attempt makes a new file: it is announced and read from
its start.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from watcherd.job.eventfile import EventReader
from watcherd.job.events import Renderer, one_line
from watcherd.spool.folders import Layout
from watcherd.spool.lookup import JobRef
from watcherd.spool.waiting import SAFETY_POLL_SECONDS, Ended, JobWatch, Lost
from watcherd.spool.wakeup import Wakeup


class Follower:
    """One job's rendered progress, a step at a time: what ``logs -f`` prints and the HTTP
    API streams. ``step`` never blocks; the caller waits between steps (inotify, a timer)."""

    def __init__(self, layout: Layout, ref: JobRef) -> None:
        self.layout = layout
        self.ref = ref
        self.watch = JobWatch(layout, ref)
        self.renderer = Renderer()
        self.reader: EventReader | None = None
        self.restarts = 0

    def folders(self) -> list[Path]:
        """The folders whose changes may move the job on (to watch between steps)."""
        return self.watch.folders()

    def step(self) -> tuple[list[str], Ended | Lost | None]:
        """The lines rendered since the last step, and how the job ended once it has."""
        lines: list[str] = []
        current = self.watch.refresh()
        if current is None:
            return lines, Lost(self.watch.ref)
        if self.reader is None and current.job_id is not None:
            if self.ref.job_id is None:
                lines.append(f"--- claimed as job {current.job_id} ---")
            self.reader = EventReader(self.layout.out_dir(current.job_id) / "events.jsonl")
        ended = self.watch.ended()  # before reading: what it wrote before it ended is read
        if self.reader is not None:
            for event in _drain(self.reader):
                if self.reader.restarts != self.restarts:
                    self.restarts = self.reader.restarts
                    self.renderer = Renderer()
                    lines.append("--- a new attempt started ---")
                lines += self.renderer.feed(event)
        if ended is not None:
            reason = one_line(ended.record.get("reason"), 400)
            lines.append(f"--- {one_line(ended.record.get('state'), 20)}: {reason} ---")
        return lines, ended

    @property
    def finished(self) -> bool:
        current = self.watch.ref
        return current.place.finished


def follow_logs(layout: Layout, ref: JobRef, emit: Callable[[str], None]) -> Ended | Lost:
    follower = Follower(layout, ref)
    with Wakeup() as wakeup:
        while True:
            armed = follower.folders()
            for folder in armed:
                wakeup.watch(folder)
            lines, ended = follower.step()
            for line in lines:
                emit(line)
            if ended is not None:
                return ended
            if follower.folders() != armed:
                continue
            wakeup.wait(0.5 if follower.finished else SAFETY_POLL_SECONDS)


def _drain(reader: EventReader) -> list[dict[str, object]]:
    """Everything written so far, even more than one read's worth."""
    events: list[dict[str, object]] = []
    while True:
        before = reader.offset, reader.restarts
        events += reader.read()
        if (reader.offset, reader.restarts) == before:
            return events
