"""Figures, each beside its floor and its goal: a table for people, JSON for machines."""

from __future__ import annotations

import json
import math
import operator
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}


@dataclass
class Figure:
    section: str
    name: str
    value: float | None
    unit: str
    floor: float | None = None  # what the same work costs without watcherd
    floor_what: str = ""
    goal: float | None = None  # the figure passes when ``value <op> goal``
    goal_op: str = "<="
    goal_what: str = ""  # the goal in words, when it is not just a number
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.goal is None:
            return ""
        if self.value is None or math.isnan(self.value):
            return "n/a"
        return "ok" if _COMPARE[self.goal_op](self.value, self.goal) else "MISS"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict
        return data


@dataclass
class Report:
    mode: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # per-section raw numbers
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def misses(self) -> list[Figure]:
        return [f for f in self.figures if f.verdict == "MISS"]

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "duration_s": round(time.time() - self.started, 1),
            "machine": {
                "cpus": _cpus(),
                "python": platform.python_version(),
                "kernel": platform.release(),
            },
            "figures": [f.as_json() for f in self.figures],
            "misses": [f"{f.section}: {f.name}" for f in self.misses()],
            "notes": self.notes,
            "details": self.details,
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, default=_plain) + "\n")

    def table(self) -> str:
        header = ("section", "figure", "value", "floor", "goal", "", "note")
        rows: list[tuple[str, ...]] = []
        for f in self.figures:
            floor = "" if f.floor is None else f"{fmt(f.floor, f.unit)}"
            if f.floor_what:
                floor = f"{floor} ({f.floor_what})" if floor else f.floor_what
            goal = f.goal_what or ("" if f.goal is None else f"{f.goal_op} {fmt(f.goal, f.unit)}")
            note = f.note if len(f.note) <= 90 else f.note[:87] + "..."
            rows.append((f.section, f.name, fmt(f.value, f.unit), floor, goal, f.verdict, note))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [_row(header, widths), _row(tuple("-" * w for w in widths), widths)]
        lines += [_row(r, widths) for r in rows]
        misses = self.misses()
        lines.append("")
        lines.append(
            f"{len(self.figures)} figures, {len(misses)} miss their goal"
            + (": " + "; ".join(f"{f.section} {f.name}" for f in misses) if misses else "")
        )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _row(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if unit in ("x", "%", "jobs/s", "MB", "MB/job"):
        digits = 3 if abs(value) < 0.1 else 2
        return f"{value:.{digits}f} {unit}"
    if abs(value) >= 100:
        return f"{value:.0f} {unit}"
    if abs(value) >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def _plain(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


# -- statistics --------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks; nan when empty."""
    data = sorted(v for v in values if not math.isnan(v))
    if not data:
        return math.nan
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def paired_differences(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """``a[i] - b[i]`` for each pair measured side by side (one after the other, under the
    same load), in order; a pair with either member missing (nan) is left out."""
    if len(a) != len(b):
        raise ValueError(f"unpaired samples: {len(a)} beside {len(b)}")
    return [x - y for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]


def summary(values: Sequence[float]) -> dict[str, float]:
    data = [v for v in values if not math.isnan(v)]
    if not data:
        return {"n": 0, "p50": math.nan, "p95": math.nan, "max": math.nan, "mean": math.nan}
    return {
        "n": len(data),
        "p50": percentile(data, 50),
        "p95": percentile(data, 95),
        "max": max(data),
        "mean": statistics.fmean(data),
    }
