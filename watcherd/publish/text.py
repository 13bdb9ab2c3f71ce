"""The pull request's title and body, from the job: the first line of its summary (or the
config's template), then summary.md with the job's name, agent, model, tokens and a link.

summary.md is the agent's: it reaches the body as the agent wrote it (control characters
and terminal escapes removed, cut to the forge's limit). It is text for the reviewer, like
the branch: it may say anything, mention anyone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from watcherd.config.publish import PublishSettings
from watcherd.job.events import clean, one_line
from watcherd.job.spec import JobSpec
from watcherd.util.safeio import read_regular

SUMMARY_LIMIT = 50_000
TITLE_WIDTH = 120
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def summary_of(out_dir: Path) -> str:
    data = read_regular(out_dir / "summary.md", SUMMARY_LIMIT + 1)
    return clean(data.decode("utf-8", "replace")) if data else ""


def first_line(text: str) -> str:
    for line in text.splitlines():
        line = _HEADING.sub("", line).strip()
        if line:
            return line
    return ""


def pull_text(
    settings: PublishSettings, spec: JobSpec, record: dict[str, Any], job_id: str,
    summary: str, branch: str,
) -> tuple[str, str]:  # fmt: skip
    """(title, body) of the job's pull request."""
    name = str(record.get("job_file") or job_id).removesuffix(".yaml")
    fields = _Fields(
        summary=first_line(summary) or first_line(spec.prompt) or f"watcherd job {job_id}",
        prompt=first_line(spec.prompt), name=name, job_id=job_id, agent=spec.agent,
        model=spec.model or "", branch=branch,
    )  # fmt: skip
    title = one_line(settings.title.format_map(fields), TITLE_WIDTH) or f"watcherd job {job_id}"
    lines = []
    if summary.strip():
        text = summary if len(summary) <= SUMMARY_LIMIT else summary[:SUMMARY_LIMIT] + "\n…"
        lines += [text.rstrip(), ""]
    lines += ["---", f"Opened by watcherd for job `{one_line(name, 100)}` (`{job_id}`): "
              f"{_account(spec, record)}."]  # fmt: skip
    if settings.job_url:
        lines.append(f"The job: {settings.job_url.format(job_id=job_id)}")
    return title, "\n".join(lines) + "\n"


def _account(spec: JobSpec, record: dict[str, Any]) -> str:
    parts = [f"agent {spec.agent}", f"model {spec.model or 'its default'}"]
    usage = record.get("usage")
    if isinstance(usage, dict):
        given, made = usage.get("input_tokens"), usage.get("output_tokens")
        if isinstance(given, int) and isinstance(made, int):
            parts.append(f"{given + made:,} tokens ({given:,} in, {made:,} out)")
    commits = record.get("commits")
    if isinstance(commits, list):
        before = str(record.get("commit_before") or "")[:12]
        parts.append(f"{len(commits)} commit(s) on {before}")
    return ", ".join(parts)
