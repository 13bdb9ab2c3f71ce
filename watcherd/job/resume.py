"""Resuming an earlier job: its agent session, on a workspace that starts where it ended.

A job with ``resume: NAME|ID`` continues the conversation of an earlier job of the same
agent on the same repository: the daemon copies that job's sessions (out/<id>/sessions)
into the new job's fresh home, passes its session id, and starts the workspace from the
earlier job's branch in repos/<key>.git. Refused, with the reason, when the earlier job
or its session is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from watcherd.spool.folders import Layout
from watcherd.spool.lookup import resolve
from watcherd.util.safeio import read_json_object


class ResumeError(ValueError):
    """The earlier job cannot be resumed; the message says why."""


@dataclass(frozen=True)
class ResumePoint:
    job_id: str
    session_id: str
    sessions: Path  # out/<id>/sessions of the earlier job: its agent's session files
    results_repo: Path
    branch: str
    commit: str  # where its work ended


def find_resume_point(layout: Layout, query: str, agent: str, results_repo: Path) -> ResumePoint:
    found = resolve(layout, query)
    if found is None or found.job_id is None:
        raise ResumeError(f"resume: no job named {query!r}")
    if not found.place.finished:
        raise ResumeError(f"resume: job {found.job_id} has not ended yet ({found.place.value})")
    out = layout.out_dir(found.job_id)
    record = read_json_object(out / "exit.json") or {}
    if record.get("agent", "codex") != agent:
        raise ResumeError(
            f"resume: job {found.job_id} ran {record.get('agent', 'codex')}, not {agent}"
        )
    session = record.get("session_id")
    if not isinstance(session, str) or not session:
        raise ResumeError(f"resume: job {found.job_id} left no session to resume")
    sessions = out / "sessions"
    if not sessions.is_dir() or sessions.is_symlink():
        raise ResumeError(f"resume: the session files of job {found.job_id} are gone")
    repo, branch, commit = (record.get(k) for k in ("results_repo", "branch", "commit_after"))
    if not (isinstance(repo, str) and isinstance(branch, str) and isinstance(commit, str)):
        raise ResumeError(f"resume: job {found.job_id} saved no work to continue from")
    if Path(repo) != results_repo:
        raise ResumeError(f"resume: job {found.job_id} worked on another repository")
    return ResumePoint(found.job_id, session, sessions, Path(repo), branch, commit)
