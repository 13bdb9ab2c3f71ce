"""A job's outcome as data, and ``out/<id>/exit.json``: always written, always truthful."""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watcherd.fsutil import write_atomic
from watcherd.repourl import redact


class JobState(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"
    TIMEOUT = "timeout"
    INVALID = "invalid"

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
class Outcome:
    state: JobState
    reason: str
    attempts: int = 0
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    saved: SavedWork | None = None
    removed_from_out: tuple[str, ...] = ()  # what the agent left there that had to go

    def judged(self, state: JobState, reason: str) -> Outcome:
        return dataclasses.replace(self, state=state, reason=reason)

    def with_removed(self, removed: tuple[str, ...]) -> Outcome:
        return dataclasses.replace(self, removed_from_out=(*self.removed_from_out, *removed))


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_exit_json(out_dir: Path, job_id: str, source_name: str, outcome: Outcome) -> None:
    """Merge the daemon's verdict into what the container wrote (its fields are kept,
    the daemon's win where both exist), atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "exit.json"
    record = read_worker_record(out_dir)
    if "state" in record:
        record["worker_state"] = record.pop("state")
    for field in dataclasses.fields(SavedWork):  # only the daemon's word on where work went
        record.pop(field.name, None)
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
    if outcome.saved is not None:
        record.update(dataclasses.asdict(outcome.saved))
        record["commits"] = list(outcome.saved.commits)
    # Owned like its folder (the job's user), so the host user owns all of out/<id>.
    folder = out_dir.stat()
    write_atomic(
        path,
        (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(),
        owner=(folder.st_uid, folder.st_gid),
    )


def read_worker_record(out_dir: Path) -> dict[str, Any]:
    """The worker's own exit.json, if it wrote a sane one. Never follows a symlink the
    agent may have planted there."""
    path = out_dir / "exit.json"
    if path.is_symlink() or not path.is_file():
        return {}
    try:
        with path.open("rb") as handle:
            data = json.loads(handle.read(1024 * 1024))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
