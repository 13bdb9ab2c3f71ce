"""From a NAME|ID that a person or an agent gives to the job it means, or the reason there is
none: the words ``show``, ``wait``, ``logs`` and the MCP server's tools all give."""

from __future__ import annotations

from watcherd.job.events import one_line
from watcherd.spool.folders import Layout
from watcherd.spool.jobid import JOB_ID_EXAMPLE
from watcherd.spool.lookup import JobRef, resolve


class NoSuchJob(LookupError):
    """No job by that name or id under the root; ``str()`` says how to name one."""


def find_job(layout: Layout, query: str) -> JobRef:
    ref = resolve(layout, query)
    if ref is None:
        raise NoSuchJob(
            f"no job {query!r} under {layout.root} (give the name it was dropped as, with or "
            f"without .yaml, or its id such as {JOB_ID_EXAMPLE})"
        )
    return ref


def where(ref: JobRef) -> str:
    """``job <id> (running)``, or ``fix.yaml (queued in the inbox)`` before its claim."""
    if ref.job_id is None:
        return f"{one_line(ref.name, 120)} (queued in the inbox)"
    return f"job {ref.job_id} ({ref.place.value})"
