"""``watcherd logs -f``: a job's progress as it happens, until it ends.

Follows the job like ``wait`` does (from the inbox to its claim, then to done/ or
failed/) and, once it has an id, its out/<id>/events.jsonl, woken by inotify on out/<id>/
when Codex appends to it. A new attempt makes a new file: it is announced and read from
its start.
"""

from __future__ import annotations

from collections.abc import Callable

from watcherd.job.eventfile import EventReader
from watcherd.job.events import Renderer, one_line
from watcherd.spool.folders import Layout
from watcherd.spool.lookup import JobRef
from watcherd.spool.waiting import SAFETY_POLL_SECONDS, Ended, JobWatch, Lost
from watcherd.spool.wakeup import Wakeup


def follow_logs(layout: Layout, ref: JobRef, emit: Callable[[str], None]) -> Ended | Lost:
    watch = JobWatch(layout, ref)
    renderer = Renderer()
    reader: EventReader | None = None
    restarts = 0
    with Wakeup() as wakeup:
        while True:
            armed = watch.folders()
            for folder in armed:
                wakeup.watch(folder)
            current = watch.refresh()
            if current is None:
                return Lost(watch.ref)
            if reader is None and current.job_id is not None:
                if ref.job_id is None:
                    emit(f"--- claimed as job {current.job_id} ---")
                reader = EventReader(layout.out_dir(current.job_id) / "events.jsonl")
            ended = watch.ended()  # before reading: what it wrote before it ended is read
            if reader is not None:
                for event in _drain(reader):
                    if reader.restarts != restarts:
                        restarts = reader.restarts
                        renderer = Renderer()
                        emit("--- a new attempt started ---")
                    for line in renderer.feed(event):
                        emit(line)
            if ended is not None:
                reason = one_line(ended.record.get("reason"), 400)
                emit(f"--- {one_line(ended.record.get('state'), 20)}: {reason} ---")
                return ended
            if watch.folders() != armed:
                continue
            wakeup.wait(0.5 if current.place.finished else SAFETY_POLL_SECONDS)


def _drain(reader: EventReader) -> list[dict[str, object]]:
    """Everything written so far, even more than one read's worth."""
    events: list[dict[str, object]] = []
    while True:
        before = reader.offset, reader.restarts
        events += reader.read()
        if (reader.offset, reader.restarts) == before:
            return events
