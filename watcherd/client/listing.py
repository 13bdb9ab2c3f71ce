"""Every job under a root, newest first, as one line each: for ``GET /jobs``, the dashboard,
``list_jobs`` and the metrics. A finished job never changes, so its line is read once and
kept; a queued or running one is read again each time."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from watcherd.config import Config
from watcherd.job.spec import InvalidJob, parse_job
from watcherd.spool.filters import is_job_name
from watcherd.spool.folders import Layout, read_run_state
from watcherd.spool.lookup import find_claim
from watcherd.util.safeio import read_json_object, read_regular

JOB_FILE_LIMIT = 64 * 1024 + 1


@dataclass(frozen=True)
class JobLine:
    job_id: str | None  # None while queued
    name: str | None  # the name it was dropped as
    state: str  # queued, running, done, failed, timeout, invalid, cancelled
    reason: str | None = None
    agent: str | None = None
    repo_url: str | None = None
    queued_at: float | None = None  # when it was dropped (its file's mtime)
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    prepared: bool = False  # running/: made ready ahead, its container not started yet

    @property
    def key(self) -> str:
        """Where it sorts, newest first: queued jobs before all claimed ones, then by id
        (an id begins with its claim's UTC time)."""
        return self.job_id or f"~{self.queued_at or 0:020.6f}"

    @property
    def duration(self) -> float | None:
        if not (self.started_at and self.finished_at):
            return None
        try:
            return (_when(self.finished_at) - _when(self.started_at)).total_seconds()
        except ValueError:
            return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Filters:
    state: str | None = None
    agent: str | None = None
    repository: str | None = None
    name: str | None = None

    def keep(self, line: JobLine) -> bool:
        if self.state and line.state != self.state:
            return False
        if self.agent and line.agent != self.agent:
            return False
        if self.repository and line.repo_url != self.repository:
            return False
        return not (self.name and line.name not in (self.name, f"{self.name}.yaml"))


class JobList:
    """One root's jobs. Thread-safe; keeps what it read of finished jobs."""

    def __init__(self, layout: Layout, config: Config) -> None:
        self.layout = layout
        self.config = config
        self._finished: dict[str, JobLine] = {}
        self._lock = threading.Lock()

    def page(self, filters: Filters, after: str | None = None, limit: int = 50) -> list[JobLine]:
        """Up to ``limit`` jobs newest first, those sorting after ``after`` (a cursor: the
        last page's last key) only."""
        lines = []
        for line in self.all():
            if after is not None and line.key >= after:
                continue
            if filters.keep(line):
                lines.append(line)
                if len(lines) == limit:
                    break
        return lines

    def all(self) -> list[JobLine]:
        lines = [*self._queued(), *self._claimed()]
        lines.sort(key=lambda line: line.key, reverse=True)
        return lines

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for line in self.all():
            counts[line.state] = counts.get(line.state, 0) + 1
        return counts

    def _queued(self) -> Iterator[JobLine]:
        try:
            entries = list(os.scandir(self.layout.inbox))
        except FileNotFoundError:
            return
        for entry in entries:
            if not is_job_name(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if find_claim(self.layout, entry.name, st.st_ino) is not None:
                continue  # claimed since the listing: it is in running/
            agent, repo = self._job_keys(self.layout.inbox / entry.name)
            yield JobLine(None, entry.name, "queued", None, agent, repo, queued_at=st.st_mtime)

    def _claimed(self) -> Iterator[JobLine]:
        for folder in (self.layout.running, self.layout.done, self.layout.failed):
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            for file_name in names:
                if not file_name.endswith(".yaml") or file_name.startswith("."):
                    continue
                job_id = file_name.removesuffix(".yaml")
                line = self._line(job_id, running=folder == self.layout.running)
                if line is not None:
                    yield line

    def _line(self, job_id: str, running: bool) -> JobLine | None:
        with self._lock:
            known = self._finished.get(job_id)
        if known is not None:
            return known
        if running:
            state = read_run_state(self.layout, job_id)
            agent, repo = self._job_keys(self.layout.running / f"{job_id}.yaml")
            return JobLine(job_id, state.source_name or None, "running", None, agent, repo,
                           started_at=state.started_at or None,
                           attempts=state.attempts, prepared=state.prepared)  # fmt: skip
        record = read_json_object(self.layout.out_dir(job_id) / "exit.json")
        if record is None:
            return None  # filed a moment before its record is readable, or a stray file
        line = _from_record(job_id, record)
        if line.repo_url is None or line.agent is None:
            agent, repo = self._job_keys(self._filed(job_id))
            line = JobLine(**{**asdict(line), "agent": line.agent or agent,
                              "repo_url": line.repo_url or repo})  # fmt: skip
        with self._lock:
            self._finished[job_id] = line
        return line

    def _filed(self, job_id: str) -> Path:
        for folder in (self.layout.done, self.layout.failed):
            path = folder / f"{job_id}.yaml"
            if path.exists():
                return path
        return self.layout.failed / f"{job_id}.yaml"

    def _job_keys(self, path: Path) -> tuple[str | None, str | None]:
        data = read_regular(path, JOB_FILE_LIMIT)
        if data is None:
            return None, None
        try:
            spec = parse_job(data, self.config)
        except InvalidJob:
            return None, None
        return spec.agent, spec.repo_url


def _from_record(job_id: str, record: dict[str, Any]) -> JobLine:
    usage = record.get("usage") if isinstance(record.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    return JobLine(
        job_id=job_id,
        name=_str(record.get("job_file")),
        state=_str(record.get("state")) or "failed",
        reason=_str(record.get("reason")),
        agent=_str(record.get("agent")),
        repo_url=_str(record.get("repo_url")),
        started_at=_str(record.get("started_at")),
        finished_at=_str(record.get("finished_at")),
        attempts=_int(record.get("attempts")),
        input_tokens=_int(usage.get("input_tokens")),
        output_tokens=_int(usage.get("output_tokens")),
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
