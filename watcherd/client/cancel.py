"""Cancelling a job: a request on disk that the daemon owning the job acts on (see
watcherd/spool/cancel.py). The CLI, the HTTP API and the MCP server all come through here."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from watcherd.spool.cancel import CancelBook, new_request
from watcherd.spool.folders import Layout
from watcherd.spool.lookup import JobRef, Place, resolve
from watcherd.util.safeio import read_json_object


class CancelAnswer(enum.StrEnum):
    REQUESTED = "requested"  # on disk; the daemon owning the job acts within a second
    ALREADY_REQUESTED = "already requested"  # by someone before: idempotent
    ENDED = "ended"  # it had ended already: nothing cancelled
    UNKNOWN = "unknown"  # no such job


@dataclass(frozen=True)
class CancelResult:
    answer: CancelAnswer
    ref: JobRef | None
    state: str | None = None  # the ended job's state, for ENDED

    @property
    def message(self) -> str:
        where = _where(self.ref)
        if self.answer is CancelAnswer.ENDED:
            return f"{where} had already ended ({self.state}); nothing to cancel"
        if self.answer is CancelAnswer.UNKNOWN:
            return "no such job"
        if self.answer is CancelAnswer.ALREADY_REQUESTED:
            return f"{where}: cancel already requested"
        return f"{where}: cancel requested"


def cancel(layout: Layout, query: str, by: str) -> CancelResult:
    """Ask for the job ``query`` names (its name or id) to be cancelled by ``by``. Never
    touches a job that has ended; asking twice is asking once."""
    ref = resolve(layout, query)
    if ref is None:
        return CancelResult(CancelAnswer.UNKNOWN, None)
    if ref.place.finished:
        return CancelResult(CancelAnswer.ENDED, ref, ended_state(layout, ref))
    book = CancelBook(layout)
    if ref.job_id is None:
        # Claimed between the lookup and now? The daemon hands the request on to its id.
        request = new_request(by, name=ref.name, inode=ref.inode)
    else:
        request = new_request(by, job_id=ref.job_id)
    fresh = book.request(request)
    if ref.job_id is not None:
        now = resolve(layout, ref.job_id)
        if now is not None and now.place.finished:  # it ended before the request was seen
            if fresh:
                book.drop(request)
            return CancelResult(CancelAnswer.ENDED, now, ended_state(layout, now))
    return CancelResult(CancelAnswer.REQUESTED if fresh else CancelAnswer.ALREADY_REQUESTED, ref)


def ended_state(layout: Layout, ref: JobRef) -> str:
    if ref.job_id is None:
        return "unknown"
    record = read_json_object(layout.out_dir(ref.job_id) / "exit.json")
    state = record.get("state") if record else None
    return state if isinstance(state, str) else ref.place.value


def _where(ref: JobRef | None) -> str:
    if ref is None:
        return "job"
    if ref.job_id is None:
        return f"job {ref.name!r} (queued)"
    return f"job {ref.job_id} ({'running' if ref.place is Place.RUNNING else ref.place.value})"
