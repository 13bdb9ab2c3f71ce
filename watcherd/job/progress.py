"""How a running job is getting on, from the tail of its events.jsonl: what its agent did
last, when, and the tokens its finished turns used. Reads the last few KiB only, so
``status`` costs the same for a job of five minutes as for one of five hours."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from watcherd.job.eventfile import read_tail_events
from watcherd.job.events import Tokens, activity_line


@dataclass(frozen=True)
class Progress:
    last_activity: str | None  # "ran pytest -q (exit 1, failed)", "running sleep 2"
    last_activity_at: float | None  # the events file's mtime (epoch seconds)
    tokens: int | None  # summed over the finished turns in the tail; None before the first


def read_progress(out_dir: Path) -> Progress:
    tail = read_tail_events(out_dir / "events.jsonl")
    if tail is None:
        return Progress(None, None, None)
    activity = None
    tokens = Tokens()
    for event in tail.events:
        activity = activity_line(event) or activity
        if event.get("type") == "turn.completed":
            tokens.add(event.get("usage"))
    return Progress(activity, tail.modified, tokens.total if tokens.turns else None)
