"""``watcherd show``: one job as a person or a program wants to see it — its state and
record, its summary, and where its files are (outputs, results branch, workspace)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcherd.config import Config
from watcherd.job.events import clean, one_line
from watcherd.job.progress import Progress, read_progress
from watcherd.job.spec import InvalidJob, parse_job
from watcherd.repo.cache import cache_key
from watcherd.spool.folders import Layout, RunState, read_run_state
from watcherd.spool.lookup import JobRef, Place
from watcherd.util.safeio import read_json_object, read_regular

SUMMARY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class JobView:
    job_id: str | None  # None while queued
    name: str | None  # the name it was dropped as
    state: str  # queued, running, done, failed, timeout, invalid
    reason: str | None
    job_file: Path  # where the job file is now
    out_dir: Path | None
    results_repo: str | None
    branch: str | None
    workspace: Path | None  # while it exists (kept a while after the job)
    record: dict[str, Any] | None  # exit.json, once finished
    summary: str | None  # summary.md, once written
    progress: Progress | None  # while running
    age_seconds: float | None  # since the claim, while running

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "name": self.name,
            "state": self.state,
            "reason": self.reason,
            "job_file": str(self.job_file),
            "out_dir": str(self.out_dir) if self.out_dir else None,
            "results_repo": self.results_repo,
            "branch": self.branch,
            "workspace": str(self.workspace) if self.workspace else None,
            "record": self.record,
            "summary": self.summary,
            "last_activity": self.progress.last_activity if self.progress else None,
            "tokens": self.progress.tokens if self.progress else None,
            "age_seconds": None if self.age_seconds is None else round(self.age_seconds),
        }


def view_job(layout: Layout, config: Config, ref: JobRef) -> JobView:
    if ref.job_id is None:
        assert ref.name is not None
        return JobView(None, ref.name, "queued", "not claimed yet", layout.inbox / ref.name,
                       None, None, None, None, None, None, None, None)  # fmt: skip
    job_id = ref.job_id
    folder = {Place.RUNNING: layout.running, Place.DONE: layout.done}.get(ref.place, layout.failed)
    job_file = folder / f"{job_id}.yaml"
    out_dir = layout.out_dir(job_id)
    workspace = layout.root / "workspaces" / job_id
    record = read_json_object(out_dir / "exit.json") if ref.place.finished else None
    summary_bytes = read_regular(out_dir / "summary.md", SUMMARY_LIMIT)
    summary = summary_bytes.decode("utf-8", "replace") if summary_bytes else None
    progress = age = None
    results_repo = branch = None
    if record is not None:
        state = str(record.get("state", ref.place.value))
        reason = record.get("reason")
        results_repo, branch = _text(record.get("results_repo")), _text(record.get("branch"))
    else:
        state, reason = ref.place.value, None
        if ref.place is Place.RUNNING:
            progress = read_progress(out_dir)
            try:
                age = time.time() - job_file.stat().st_ctime  # ctime: the claim (a rename)
            except OSError:
                age = None
            results_repo, branch = _planned_results(layout, config, job_file, job_id)
            running = readable_run_state(layout, job_id)
            reason = PREPARED if running is not None and running.prepared else None
    return JobView(
        job_id, ref.name, state, _text(reason), job_file, out_dir if out_dir.is_dir() else None,
        results_repo, branch, workspace if workspace.is_dir() else None, record, summary,
        progress, age,
    )  # fmt: skip


PREPARED = "prepared: made ready while every slot was busy; starts when one frees"


def readable_run_state(layout: Layout, job_id: str) -> RunState | None:
    """A running job's record (why its container has no place yet, whether it is
    prepared); None for a user who cannot read it: it is the daemon's user's."""
    try:
        return read_run_state(layout, job_id)
    except OSError:
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _planned_results(
    layout: Layout, config: Config, job_file: Path, job_id: str
) -> tuple[str | None, str | None]:
    """Where a running job's work will go, from its job file."""
    data = read_regular(job_file, 64 * 1024 + 1)
    if data is None:
        return None, None
    try:
        spec = parse_job(data, config)
    except InvalidJob:
        return None, None
    repo = layout.repos / f"{cache_key(spec.repo_url)}.git"
    return str(repo), spec.branch or f"watcherd/{job_id}"


def describe(view: JobView, now: float | None = None) -> list[str]:
    """The view for a person. Everything the agent could have written is cleaned."""
    now = time.time() if now is None else now
    title = view.name or "(name unknown)"
    lines = [f"{one_line(title)}  job {view.job_id}" if view.job_id else one_line(title)]
    state = view.state + (f": {one_line(view.reason, 400)}" if view.reason else "")
    lines.append(f"state:      {state}")
    record = view.record or {}
    if record:
        started, finished = (one_line(record.get(key), 40) for key in ("started_at", "finished_at"))
        lines.append(
            f"attempts:   {record.get('attempts')}, exit code {record.get('exit_code')}; "
            f"started {started or '?'}, finished {finished or '?'}"
        )
        usage = record.get("usage")
        if isinstance(usage, dict):
            lines.append(f"tokens:     {_usage_text(usage)}")
    if view.progress is not None:
        if view.age_seconds is not None:
            lines.append(f"running:    for {age_text(view.age_seconds)}")
        if view.progress.last_activity:
            ago = ""
            if view.progress.last_activity_at is not None:
                ago = f" ({age_text(now - view.progress.last_activity_at)} ago)"
            lines.append(f"last:       {view.progress.last_activity}{ago}")
        if view.progress.tokens is not None:
            lines.append(f"tokens:     {view.progress.tokens:,} so far")
    lines.append(f"job file:   {view.job_file}")
    if view.out_dir is not None:
        lines.append(f"outputs:    {view.out_dir}/ (summary.md, events.jsonl, changes.patch, "
                     "run.log, exit.json)")  # fmt: skip
        lines.append(f"            watcherd logs {view.job_id}")
    if view.branch and view.results_repo:
        lines.append(f"results:    branch {view.branch} in {view.results_repo}")
        commits = record.get("commits")
        if isinstance(commits, list):
            lines.append(f"            {len(commits)} new commit(s); "
                         f"git fetch {view.results_repo} {view.branch}")  # fmt: skip
    publish = record.get("publish")
    if isinstance(publish, dict):
        lines.append(f"publish:    {publish_text(publish)}")
    if view.workspace is not None:
        lines.append(f"workspace:  {view.workspace}/ (sealed once the job ends, kept a while)")
    if view.summary:
        lines += ["", "--- summary.md ---", *clean(view.summary).rstrip("\n").split("\n")]
    return lines


def publish_text(publish: dict[str, Any]) -> str:
    """``published (draft): https://…/pull/7, branch watcherd/fix at 1a2b3c4d5e6f`` or
    ``refused: <reason>``: exit.json's ``publish``, for a person."""
    state = one_line(publish.get("state") or "?", 20)
    mode = publish.get("as")
    text = state + (f" ({one_line(mode, 10)})" if isinstance(mode, str) else "")
    where = [one_line(publish["url"], 300)] if isinstance(publish.get("url"), str) else []
    if isinstance(publish.get("branch"), str):
        commit = publish.get("commit")
        at = f" at {commit[:12]}" if isinstance(commit, str) else ""
        where.append(f"branch {one_line(publish['branch'], 120)}{at}")
    if where and state in ("published", "pushed"):
        text += ": " + ", ".join(where)
    if publish.get("reason"):
        text += f": {one_line(publish['reason'], 400)}"
    return text


def _usage_text(usage: dict[str, Any]) -> str:
    parts = [f"{one_line(key, 40)} {value:,}" for key, value in sorted(usage.items())
             if isinstance(value, int) and not isinstance(value, bool)]  # fmt: skip
    return ", ".join(parts) or "(none)"


def age_text(seconds: float) -> str:
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
