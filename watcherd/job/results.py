"""A job's outcome as data, and ``out/<id>/exit.json``: always written, always truthful."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watcherd.agents.base import AgentReport
from watcherd.gateway.grants import Spent
from watcherd.repo.url import redact
from watcherd.util.fsutil import write_atomic
from watcherd.util.safeio import read_whole


class JobState(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"
    TIMEOUT = "timeout"
    INVALID = "invalid"
    CANCELLED = "cancelled"  # someone asked (watcherd cancel, the API): filed in failed/

    @property
    def ok(self) -> bool:
        return self is JobState.DONE


@dataclass(frozen=True)
class SavedWork:
    """Where the agent's work went: its branch in repos/<key>.git, and the commits on it."""

    results_repo: str
    branch: str
    commit_before: str
    commit_after: str
    commits: tuple[str, ...]


@dataclass(frozen=True)
class DiskBound:
    """How the job's disk budget held (watcherd/job/disk.py): ``filesystem``, a filesystem
    of its own that writes could not go past, or ``poll``, measured while it ran (``why``
    it had to be)."""

    bound: str
    budget: int
    used: int | None = None  # at the end, when known
    why: str = ""


@dataclass(frozen=True)
class Outcome:
    state: JobState
    reason: str
    attempts: int = 0
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    saved: SavedWork | None = None
    removed_from_out: tuple[str, ...] = ()  # what the agent left there that had to go
    agent: str | None = None
    report: AgentReport | None = None  # the agent's own account: session, usage
    gateway: Spent | None = None  # the gateway's account of its model calls: the usage
    cancelled_by: str | None = None  # who asked, for a cancelled job
    disk: DiskBound | None = None

    def judged(self, state: JobState, reason: str) -> Outcome:
        return dataclasses.replace(self, state=state, reason=reason)

    def with_agent(self, agent: str, report: AgentReport) -> Outcome:
        return dataclasses.replace(self, agent=agent, report=report)

    def with_gateway(self, spent: Spent | None) -> Outcome:
        return dataclasses.replace(self, gateway=spent)

    def cancelled(self, by: str) -> Outcome:
        return dataclasses.replace(
            self, state=JobState.CANCELLED, reason=f"cancelled by {by}", cancelled_by=by
        )

    def with_disk(self, disk: DiskBound | None) -> Outcome:
        return dataclasses.replace(self, disk=disk)

    def with_removed(self, removed: tuple[str, ...]) -> Outcome:
        return dataclasses.replace(self, removed_from_out=(*self.removed_from_out, *removed))


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_exit_json(
    out_dir: Path,
    job_id: str,
    source_name: str,
    outcome: Outcome,
    origin: Mapping[str, str] | None = None,
) -> None:
    """The daemon's verdict, with what the worker reported (its known fields only, their
    types checked: the agent can write that file), atomically and as strict JSON.
    ``origin``: what made the job when the daemon did (schedule, scheduled_for; hook,
    delivery), from the spool's record of it, never from the job file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = dict(read_worker_record(out_dir))
    if "state" in record:
        record["worker_state"] = record.pop("state")
    record.update(
        {
            "job_id": job_id,
            "job_file": source_name,
            "state": outcome.state.value,
            "reason": redact(outcome.reason),
            "attempts": outcome.attempts,
            "exit_code": outcome.exit_code,
            "started_at": outcome.started_at or record.get("started_at"),
            "finished_at": outcome.finished_at or utc_now(),
            "removed_from_out": list(outcome.removed_from_out),
        }
    )
    if outcome.cancelled_by is not None:
        record["cancelled_by"] = outcome.cancelled_by
    record.update(origin or {})
    if outcome.saved is not None:
        record.update(dataclasses.asdict(outcome.saved))
        record["commits"] = list(outcome.saved.commits)
    if outcome.agent is not None:
        report = outcome.report or AgentReport()
        record["agent"] = outcome.agent
        record["session_id"] = report.session_id
        record["usage"] = dataclasses.asdict(report.usage) if report.usage else None
    if outcome.gateway is not None:
        # Counted by the gateway from the provider's own responses: the agent cannot forge
        # it. The agent's own account stays beside it.
        record["agent_usage"] = record.get("usage")
        record["usage"] = {
            "input_tokens": outcome.gateway.input_tokens,
            "output_tokens": outcome.gateway.output_tokens,
            "model_calls": outcome.gateway.calls,
            "refused_calls": outcome.gateway.refused,
            "counted_by": "gateway",
        }
    if outcome.disk is not None:
        disk: dict[str, Any] = {"bound": outcome.disk.bound, "budget": outcome.disk.budget}
        if outcome.disk.used is not None:
            disk["used"] = outcome.disk.used
        if outcome.disk.why:
            disk["why"] = outcome.disk.why
        record["disk"] = disk
    # Owned like its folder (the job's user), so the host user owns all of out/<id>.
    folder = out_dir.stat()
    write_atomic(
        out_dir / "exit.json",
        (json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n").encode(),
        owner=(folder.st_uid, folder.st_gid),
    )


# What the worker may report, and of which type. Anything else it wrote is dropped: the
# daemon's fields (state, branch, commits, ...) are never the worker's to set.
WORKER_FIELDS: dict[str, type] = {
    "state": str,
    "reason": str,
    "started_at": str,
    "duration_seconds": int,
    "repo_url": str,
    "repo_ref": str,
    "repo_dir": str,
    "agent_version": str,
}
MAX_WORKER_RECORD = 1024 * 1024
MAX_WORKER_STRING = 4000


def read_worker_record(out_dir: Path) -> dict[str, Any]:
    """The known fields of the worker's own exit.json, each of its type; {} when there
    is no sane one. Never follows a link, never fails on what it finds (the agent may
    have written a 200 KB nest of brackets, NaN, 1e999)."""
    raw = read_whole(out_dir / "exit.json", MAX_WORKER_RECORD)
    if raw is None:
        return {}
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        key: _checked(data[key])
        for key, kind in WORKER_FIELDS.items()
        if key in data and _is(data[key], kind)
    }


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _is(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is dict:  # usage: token counts
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in value.items()
        )
    return isinstance(value, kind)


def _checked(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_WORKER_STRING]
    if isinstance(value, dict):
        return {k[:100]: v for k, v in list(value.items())[:50]}
    return value
