"""A schedule's times across both DST changes, in Europe/Berlin and America/New_York:
a slot that does not exist runs once at the next valid time, a repeated hour runs a
fixed-hour schedule once, and every real hour and minute still runs once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from watcherd.triggers.cron import Plan


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type,misc]


def local(moments: list[datetime], zone: str) -> list[str]:
    return [m.astimezone(Plan("* * * * *", zone).zone).isoformat() for m in moments]


# Spring: Berlin jumps 02:00 -> 03:00 at 2026-03-29 01:00Z, New York 02:00 -> 03:00 at
# 2026-03-08 07:00Z. Autumn: Berlin 03:00 -> 02:00 at 2026-10-25 01:00Z, New York
# 02:00 -> 01:00 at 2026-11-01 06:00Z.
Changes = dict[str, datetime]
SPRING = {"Europe/Berlin": utc(2026, 3, 29, 1), "America/New_York": utc(2026, 3, 8, 7)}
AUTUMN = {"Europe/Berlin": utc(2026, 10, 25, 1), "America/New_York": utc(2026, 11, 1, 6)}


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("change", [SPRING, AUTUMN], ids=["spring", "autumn"])
def test_every_minute_is_every_real_minute_across_the_change(zone: str, change: Changes) -> None:
    start = change[zone] - timedelta(minutes=5, seconds=30)
    times = Plan("* * * * *", zone).next_times(start, 10)
    assert [t - times[0] for t in times] == [timedelta(minutes=n) for n in range(10)]


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("change", [SPRING, AUTUMN], ids=["spring", "autumn"])
@pytest.mark.parametrize("hour", ["*", "*/1", "0-23", ",".join(map(str, range(24)))])
def test_hourly_is_every_real_hour_across_the_change(zone: str, change: Changes, hour: str) -> None:
    """Both passes through a repeated hour are real hours: an hourly schedule runs in
    each, however its hour field says every hour; the hour that does not exist in spring
    is no run and no gap of two hours."""
    start = change[zone] - timedelta(hours=3, minutes=30)
    times = Plan(f"0 {hour} * * *", zone).next_times(start, 6)
    assert [t - times[0] for t in times] == [timedelta(hours=n) for n in range(6)]


def test_daily_in_berlin_spring_runs_the_missing_slot_once_at_the_next_valid_time() -> None:
    times = Plan("30 2 * * *", "Europe/Berlin").next_times(utc(2026, 3, 27, 12), 4)
    assert local(times, "Europe/Berlin") == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that night
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_daily_in_berlin_autumn_runs_once_in_the_repeated_hour() -> None:
    times = Plan("30 2 * * *", "Europe/Berlin").next_times(utc(2026, 10, 24, 12), 3)
    assert local(times, "Europe/Berlin") == [
        "2026-10-25T02:30:00+02:00",  # the first pass only, not 02:30+01:00 an hour later
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]


def test_daily_in_new_york_both_changes() -> None:
    spring = Plan("30 2 * * *", "America/New_York").next_times(utc(2026, 3, 7, 12), 3)
    assert local(spring, "America/New_York") == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]
    autumn = Plan("30 1 * * *", "America/New_York").next_times(utc(2026, 10, 31, 12), 3)
    assert local(autumn, "America/New_York") == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
        "2026-11-03T01:30:00-05:00",
    ]


def test_a_fixed_hour_with_a_minute_step_runs_its_repeated_hour_once() -> None:
    """cronsim yields both passes of */30 1 * * * on New York's autumn day; the plan keeps
    the first: 01:00 and 01:30 run once each, as on any other day."""
    times = Plan("*/30 1 * * *", "America/New_York").next_times(utc(2026, 10, 31, 12), 4)
    assert local(times, "America/New_York") == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:00:00-05:00",
        "2026-11-02T01:30:00-05:00",
    ]


def test_due_is_the_newest_slot_and_counts_the_ones_it_passes_over() -> None:
    plan = Plan("0 * * * *")
    due = plan.due(utc(2026, 12, 1, 3), utc(2026, 12, 8, 3, 30))
    assert due is not None
    assert (due.slot, due.missed, due.counted_all) == (utc(2026, 12, 8, 3), 7 * 24 - 1, True)
    assert plan.due(utc(2026, 12, 8, 3), utc(2026, 12, 8, 3, 59)) is None  # 03:00 is not after


def test_a_very_long_downtime_still_finds_the_newest_slot() -> None:
    due = Plan("* * * * *").due(utc(2025, 1, 1), utc(2026, 6, 1, 12, 0, 30))
    assert due is not None and due.slot == utc(2026, 6, 1, 12) and not due.counted_all
