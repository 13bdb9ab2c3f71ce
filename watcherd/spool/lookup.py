"""From what a person or agent types (the name a job was dropped as, with or without
``.yaml``, or its id) to the job: where it is now and what it was dropped as.

A name still in the inbox is *queued*: it has no id yet. Its claim renames the inbox
entry, so the inode it had in the inbox is the inode of ``running/<id>.yaml`` and, later,
of ``done/`` or ``failed/<id>.yaml``: that is how a waiter tells its own job from others
dropped under the same name.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from watcherd.spool.filters import is_job_name
from watcherd.spool.folders import Layout
from watcherd.spool.jobid import is_job_id
from watcherd.spool.names import NameIndex
from watcherd.util.safeio import read_json_object


class Place(enum.StrEnum):
    QUEUED = "queued"  # in the inbox, not claimed yet
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # failed, timed out or invalid: exit.json says which

    @property
    def finished(self) -> bool:
        return self in (Place.DONE, Place.FAILED)


@dataclass(frozen=True)
class JobRef:
    place: Place
    job_id: str | None  # None while queued
    name: str | None  # the name it was dropped as, when known
    inode: int | None = None  # of the inbox entry, while queued


def resolve(layout: Layout, query: str) -> JobRef | None:
    """The job ``query`` names, or None if there is none. A name resolves to the job
    dropped under it last: the one in the inbox if there is one, else the newest claimed."""
    query = query.strip()
    job_id = query.removesuffix(".yaml")
    if is_job_id(job_id):
        place = locate(layout, job_id)
        if place is None:
            return None
        return JobRef(place, job_id, dropped_name(layout, job_id, place))
    for name in name_candidates(query):
        found = _resolve_name(layout, name)
        if found is not None:
            return found
    return None


def name_candidates(query: str) -> list[str]:
    """The inbox names ``query`` may mean: itself if it is a job name, else with .yaml or
    .yml added. Nothing that could be a path."""
    if not query or "/" in query or "\0" in query or query.startswith("."):
        return []
    if is_job_name(query):
        return [query]
    return [f"{query}.yaml", f"{query}.yml"]


def _resolve_name(layout: Layout, name: str) -> JobRef | None:
    try:
        inode = os.lstat(layout.inbox / name).st_ino
    except OSError:
        inode = None
    if inode is not None:
        claimed = find_claim(layout, name, inode)  # claimed since we looked
        if claimed is None:
            return JobRef(Place.QUEUED, None, name, inode)
        return JobRef(locate(layout, claimed) or Place.RUNNING, claimed, name)
    for job_id in reversed(NameIndex(layout.index).ids(name)):
        place = locate(layout, job_id)
        if place is not None:  # else a claim that never happened (a crash, a lost race)
            return JobRef(place, job_id, name)
    return None


def locate(layout: Layout, job_id: str) -> Place | None:
    """Which folder holds the job file of ``job_id`` now."""
    for folder, place in (
        (layout.running, Place.RUNNING),
        (layout.done, Place.DONE),
        (layout.failed, Place.FAILED),
    ):
        if os.path.lexists(folder / f"{job_id}.yaml"):
            return place
    return None


def find_claim(layout: Layout, name: str, inode: int) -> str | None:
    """The id under which the inbox entry ``name`` with ``inode`` was claimed, if it was."""
    for job_id in reversed(NameIndex(layout.index).ids(name)):
        for folder in (layout.running, layout.done, layout.failed):
            try:
                if os.lstat(folder / f"{job_id}.yaml").st_ino == inode:
                    return job_id
            except OSError:
                continue
    return None


def newest_claim(layout: Layout, name: str, after: set[str]) -> str | None:
    """The newest id of ``name`` not in ``after`` that has a job file."""
    for job_id in reversed(NameIndex(layout.index).ids(name)):
        if job_id not in after and locate(layout, job_id) is not None:
            return job_id
    return None


def dropped_name(layout: Layout, job_id: str, place: Place) -> str | None:
    """The name a job was dropped as: its exit record says so once it is finished, the
    daemon's private state while it runs (readable by the daemon's user only)."""
    if place.finished:
        record = read_json_object(layout.out_dir(job_id) / "exit.json")
        name = record.get("job_file") if record else None
        return name if isinstance(name, str) else None
    state = read_json_object(layout.state / f"{job_id}.json")
    name = state.get("source_name") if state else None
    return name if isinstance(name, str) else None
