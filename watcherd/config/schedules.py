"""The config's ``schedules:``: jobs the operator wants run at cron times, checked when the
config loads. Only the operator's config holds them: no job file, no agent and no inbound
hook can add, change or pause one.

    schedules:
      nightly-deps:
        cron: "0 3 * * *"            # 5 fields: minute hour day-of-month month day-of-week
        timezone: Europe/Berlin      # IANA name; default UTC
        catchup: latest              # after downtime: one run for the newest missed slot; none
        overlap: skip                # no new run while one of this schedule's is queued/running
        job:                         # a job file's keys; {date}, {time}, ... in the prompt
          repo_url: https://git.example/team/app.git
          prompt: "Check the dependencies for updates ({date})."
    schedule_min_interval: 60s       # the floor: no schedule may fire more often
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

SCHEDULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}")
CATCHUP = ("latest", "none")
OVERLAP = ("skip", "allow")
KEYS = frozenset({"cron", "timezone", "enabled", "catchup", "overlap", "job"})
# Firings looked at to find the shortest gap between two runs (the floor check): enough to
# see every minute of two fired hours, and the step across midnight.
_FLOOR_SAMPLE = 2000


@dataclass(frozen=True)
class Schedule:
    id: str
    cron: str
    timezone: str = "UTC"
    enabled: bool = True
    catchup: str = "latest"
    overlap: str = "skip"
    # The job file's keys, as the operator wrote them; checked against the job schema by
    # watcherd.triggers (the config layer sits below the job schema).
    job: Mapping[str, Any] = field(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def parse_schedules(value: Any) -> dict[str, Schedule]:
    """The ``schedules:`` mapping, or ValueError naming the schedule and key at fault."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of schedule ids to {cron: ..., job: {...}}")
    schedules: dict[str, Schedule] = {}
    for name, spec in value.items():
        if not isinstance(name, str) or not SCHEDULE_ID.fullmatch(name):
            raise ValueError(
                f"schedule id {name!r}: letters, digits, '_' or '-', at most 48, "
                "starting with a letter or digit"
            )
        try:
            schedules[name] = _schedule(name, spec)
        except ValueError as exc:
            raise ValueError(f"schedule {name!r}: {exc}") from None
    return schedules


def _schedule(name: str, spec: Any) -> Schedule:
    if not isinstance(spec, dict):
        raise ValueError("expected {cron: ..., job: {...}}")
    unknown = sorted(str(key) for key in spec if key not in KEYS)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(KEYS))})"
        )
    cron = spec.get("cron")
    if not isinstance(cron, str) or len(cron.split()) != 5:
        raise ValueError("cron: expected 5 fields (minute hour day-of-month month day-of-week)")
    cron = " ".join(cron.split())
    timezone = spec.get("timezone", "UTC")
    if not isinstance(timezone, str):
        raise ValueError("timezone: expected an IANA name such as Europe/Berlin")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone: {timezone!r} is not an IANA time zone") from None
    enabled = spec.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError("enabled: expected true or false")
    catchup = spec.get("catchup", "latest")
    if catchup not in CATCHUP:
        raise ValueError(f"catchup: expected one of {', '.join(CATCHUP)}, got {catchup!r}")
    overlap = spec.get("overlap", "skip")
    if overlap not in OVERLAP:
        raise ValueError(f"overlap: expected one of {', '.join(OVERLAP)}, got {overlap!r}")
    job = spec.get("job")
    if not isinstance(job, dict) or not job:
        raise ValueError("job: expected a job file's keys (repo_url, prompt, ...)")
    template = MappingProxyType(dict(job))  # read-only: the config is frozen
    return Schedule(name, cron, timezone, enabled, str(catchup), str(overlap), template)


def shortest_gap(cron: str, timezone: str, start: datetime | None = None) -> float:
    """The fewest seconds between two firings of ``cron`` in ``timezone``, from a sample of
    its next firings; ValueError when the expression is wrong or can never fire."""
    ZoneInfo(timezone)  # the gaps are the wall clock's; the zone must exist
    begin = start or datetime(2026, 1, 1)
    try:
        times = CronSim(cron, begin)
        previous = next(times)
        gap = float("inf")
        for _ in range(_FLOOR_SAMPLE):
            current = next(times)
            gap = min(gap, (current - previous).total_seconds())
            if current - begin > timedelta(days=800):
                break
            previous = current
    except CronSimError as exc:
        raise ValueError(f"cron: {cron!r}: {exc}") from None
    except StopIteration:  # pragma: no cover - cronsim iterates forever or raises
        raise ValueError(f"cron: {cron!r} never fires") from None
    return gap


def schedule_problems(schedules: Mapping[str, Schedule], floor: float) -> list[str]:
    """Each schedule's cron can fire, and not more often than ``floor`` seconds apart."""
    problems = []
    for schedule in schedules.values():
        try:
            gap = shortest_gap(schedule.cron, schedule.timezone)
        except ValueError as exc:
            problems.append(f"schedule {schedule.id!r}: {exc}")
            continue
        if gap < floor:
            problems.append(
                f"schedule {schedule.id!r}: cron {schedule.cron!r} fires every {gap:g}s, more "
                f"often than schedule_min_interval ({floor:g}s)"
            )
    return problems
