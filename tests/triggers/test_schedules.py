"""Schedules with a fixed clock over a real root: real files, real renames, real locks.
Each slot becomes exactly one job file, after downtime one, across DST as the plan says,
with two tickers racing, with a long job and overlap: skip, paused across a restart."""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcherd.config import Config
from watcherd.config.load import _build
from watcherd.job.results import JobState, Outcome, write_exit_json
from watcherd.job.spec import InvalidJob, parse_job
from watcherd.spool.folders import Layout, Spool
from watcherd.spool.origin import read_origin
from watcherd.triggers.schedules import (
    Decision,
    Ticker,
    describe,
    fingerprint,
    run_now,
)
from watcherd.triggers.state import ScheduleState, SlotRecord, iso, stamp

URL = "https://git.example/team/app.git"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type,misc]


def make_config(root: Path, **schedules: dict[str, Any]) -> Config:
    raw = {
        name: {"job": {"repo_url": URL, "prompt": f"{name} on {{date}} at {{time}}"}, **spec}
        for name, spec in schedules.items()
    }
    return _build({"root": str(root), "schedules": raw}, "test")


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "work")
    layout.ensure()
    return layout


def inbox(layout: Layout) -> list[str]:
    return sorted(p.name for p in layout.inbox.iterdir() if not p.name.startswith("."))


def ticks(start: datetime, end: datetime, step: timedelta) -> Iterator[datetime]:
    now = start
    while now <= end:
        yield now
        now += step


def run_clock(
    ticker: Ticker, config: Config, start: datetime, end: datetime, step: timedelta
) -> list[Decision]:
    decisions: list[Decision] = []
    for now in ticks(start, end, step):
        decisions += ticker.tick(config, now)
    return decisions


def dropped(decisions: list[Decision]) -> list[datetime]:
    return [d.scheduled_for for d in decisions if d.outcome == "dropped"]


# -- every slot once --------------------------------------------------------------------


def test_every_minute_for_ten_minutes_is_ten_jobs(layout: Layout) -> None:
    config = make_config(layout.root, minutely={"cron": "* * * * *", "overlap": "allow"})
    ticker = Ticker(layout)
    start = utc(2026, 12, 7, 9, 59, 30)
    end = start + timedelta(minutes=10)
    decisions = run_clock(ticker, config, start, end, timedelta(seconds=7))
    assert dropped(decisions) == [utc(2026, 12, 7, 10, m) for m in range(10)]
    names = inbox(layout)
    assert len(names) == 10 and all(n.startswith("minutely-20261207T10") for n in names)
    first = (layout.inbox / names[0]).read_bytes()
    spec = parse_job(first, config)
    assert spec.repo_url == URL and spec.prompt == "minutely on 2026-12-07 at 10:00"


def test_a_new_schedule_does_not_run_the_slot_before_it_was_seen(layout: Layout) -> None:
    config = make_config(layout.root, nightly={"cron": "0 3 * * *"})
    ticker = Ticker(layout)
    assert ticker.tick(config, utc(2026, 12, 7, 14)) == []  # 03:00 today is before it
    assert inbox(layout) == []
    assert dropped(ticker.tick(config, utc(2026, 12, 8, 3, 0, 1))) == [utc(2026, 12, 8, 3)]


def test_a_restart_does_not_run_a_slot_again(layout: Layout) -> None:
    config = make_config(layout.root, hourly={"cron": "0 * * * *", "overlap": "allow"})
    Ticker(layout).tick(config, utc(2026, 12, 7, 9, 30))
    assert len(dropped(Ticker(layout).tick(config, utc(2026, 12, 7, 10, 0, 5)))) == 1
    for _ in range(3):  # three restarts within the same hour
        assert Ticker(layout).tick(config, utc(2026, 12, 7, 10, 20)) == []
    assert len(inbox(layout)) == 1


# -- DST, through the ticker ------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "cron", "start", "expected"),
    [
        # Berlin, spring: 02:30 does not exist on the 29th: once at 03:00 CEST (01:00Z).
        ("Europe/Berlin", "30 2 * * *", utc(2026, 3, 28, 12),
         [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]),
        # Berlin, autumn: 02:30 comes twice on the 25th: once, in the first pass.
        ("Europe/Berlin", "30 2 * * *", utc(2026, 10, 24, 12),
         [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
        # New York, spring (8 March) and autumn (1 November).
        ("America/New_York", "30 2 * * *", utc(2026, 3, 7, 12),
         [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)]),
        ("America/New_York", "30 1 * * *", utc(2026, 10, 31, 12),
         [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]),
    ],
)  # fmt: skip
def test_daily_across_dst_runs_once_a_day(
    layout: Layout, zone: str, cron: str, start: datetime, expected: list[datetime]
) -> None:
    config = make_config(layout.root, daily={"cron": cron, "timezone": zone, "overlap": "allow"})
    decisions = run_clock(
        Ticker(layout), config, start, start + timedelta(hours=47), timedelta(minutes=5)
    )
    assert dropped(decisions) == expected
    assert len(inbox(layout)) == 2


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize(
    "day", [(3, 28), (10, 24)], ids=["spring", "autumn"]
)  # Berlin changes on the 29th and 25th; New York's days are covered by the next test
def test_hourly_across_dst_runs_every_real_hour_once(
    layout: Layout, zone: str, day: tuple[int, int]
) -> None:
    config = make_config(
        layout.root, hourly={"cron": "0 * * * *", "timezone": zone, "overlap": "allow"}
    )
    start = utc(2026, *day, 12, 0, 30)
    slots = dropped(
        run_clock(Ticker(layout), config, start, start + timedelta(hours=48), timedelta(minutes=3))
    )
    assert slots == [start.replace(second=0) + timedelta(hours=n + 1) for n in range(48)]


@pytest.mark.parametrize(
    ("zone", "change"),
    [
        ("Europe/Berlin", utc(2026, 3, 29, 1)), ("Europe/Berlin", utc(2026, 10, 25, 1)),
        ("America/New_York", utc(2026, 3, 8, 7)), ("America/New_York", utc(2026, 11, 1, 6)),
    ],
)  # fmt: skip
def test_hourly_and_every_minute_on_new_york_and_berlin_change_days(
    layout: Layout, zone: str, change: datetime
) -> None:
    config = make_config(
        layout.root,
        hourly={"cron": "0 * * * *", "timezone": zone, "overlap": "allow"},
        minutely={"cron": "* * * * *", "timezone": zone, "overlap": "allow"},
    )
    start = change - timedelta(hours=1, seconds=50)
    decisions = run_clock(
        Ticker(layout), config, start, change + timedelta(hours=1), timedelta(seconds=25)
    )
    hourly = [d.scheduled_for for d in decisions if d.schedule == "hourly"]
    minutely = [d.scheduled_for for d in decisions if d.schedule == "minutely"]
    assert {d.outcome for d in decisions} == {"dropped"}
    assert hourly == [change - timedelta(hours=1), change, change + timedelta(hours=1)]
    assert len(minutely) == 2 * 60 + 1 and len(set(minutely)) == len(minutely)
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(minutely))


# -- downtime ---------------------------------------------------------------------------


def test_a_week_of_downtime_is_one_catch_up_job(layout: Layout, caplog: Any) -> None:
    caplog.set_level(logging.INFO, "watcherd.schedules")
    config = make_config(
        layout.root,
        nightly={"cron": "0 3 * * *", "timezone": "Europe/Berlin"},
        hourly={"cron": "0 * * * *"},
    )
    ticker = Ticker(layout)
    ticker.tick(config, utc(2026, 12, 1, 1, 30))
    assert len(dropped(ticker.tick(config, utc(2026, 12, 1, 2, 0, 1)))) == 2  # both fire
    for name in inbox(layout):  # the two jobs ran and ended
        job = Spool(layout).claim(name)
        assert job is not None
        Spool(layout).finish(job, ok=True)
    # Down for a week; back at 14:10 UTC on the 8th.
    decisions = Ticker(layout).tick(config, utc(2026, 12, 8, 14, 10))
    by_id = {d.schedule: d for d in decisions}
    assert by_id["nightly"].scheduled_for == utc(2026, 12, 8, 2)  # 03:00 Berlin
    assert by_id["hourly"].scheduled_for == utc(2026, 12, 8, 14)
    assert "6 earlier slot(s)" in by_id["nightly"].reason
    assert f"{7 * 24 + 12 - 1} earlier slot(s)" in by_id["hourly"].reason
    assert len(inbox(layout)) == 2  # one each, not 7 and 180
    assert "passed over, not run" in caplog.text


def test_catchup_none_runs_nothing_for_the_missed_slots(layout: Layout) -> None:
    config = make_config(
        layout.root, nightly={"cron": "0 3 * * *", "catchup": "none", "overlap": "allow"}
    )
    ticker = Ticker(layout)
    ticker.tick(config, utc(2026, 12, 1, 1))
    assert len(dropped(ticker.tick(config, utc(2026, 12, 1, 3, 0, 30)))) == 1  # on time
    decisions = Ticker(layout).tick(config, utc(2026, 12, 8, 14))
    assert [d.outcome for d in decisions] == ["missed"]
    assert len(inbox(layout)) == 1
    assert Ticker(layout).tick(config, utc(2026, 12, 8, 14, 5)) == []  # recorded once
    assert dropped(Ticker(layout).tick(config, utc(2026, 12, 9, 3, 0, 2))) == [utc(2026, 12, 9, 3)]


# -- two daemons on one root ------------------------------------------------------------


def _race(root: str, start_gate: Any, instants: list[datetime], out: Any) -> None:
    layout = Layout(Path(root))
    config = make_config(
        layout.root, **{f"every{n}": {"cron": "* * * * *", "overlap": "allow"} for n in range(3)}
    )
    ticker = Ticker(layout)  # a daemon of its own
    results = []
    for now in instants:
        start_gate.wait()  # both tick the same instant at the same moment
        results += [(d.schedule, iso(d.scheduled_for), d.outcome) for d in ticker.tick(config, now)]
    out.put(results)


@pytest.mark.parametrize("_round", range(2))
def test_two_daemons_racing_over_ten_minutes_make_each_slot_once(
    layout: Layout, _round: int
) -> None:
    make_config(layout.root)  # the root is laid out
    start = utc(2026, 12, 7, 9, 59, 58)
    # Sub-minute ticks, the same instants for both: each slot is contended several times.
    instants = list(ticks(start, start + timedelta(minutes=10), timedelta(seconds=13)))
    context = multiprocessing.get_context("fork")
    gate = context.Barrier(2)
    out = context.Queue()
    workers = [
        context.Process(target=_race, args=(str(layout.root), gate, instants, out))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    made = [r for rs in results for r in rs if r[2] == "dropped"]
    lost = [r for rs in results for r in rs if r[2] == "lost"]
    expected = {(f"every{n}", iso(utc(2026, 12, 7, 10, m))) for n in range(3) for m in range(10)}
    assert sorted((r[0], r[1]) for r in made) == sorted(expected)  # each slot once
    assert len(made) == len(expected) == 30
    assert len(inbox(layout)) == 30
    assert lost  # they did race: the other one found the slot taken
    assert all(results)  # and both took part


def test_a_crash_between_the_record_and_the_drop_is_repaired_once(layout: Layout) -> None:
    config = make_config(layout.root, hourly={"cron": "0 * * * *", "overlap": "allow"})
    Ticker(layout).tick(config, utc(2026, 12, 7, 9, 30))
    # A daemon made the 10:00 record and died before its drop (its lock died with it).
    state = ScheduleState(layout, "hourly")
    data = yaml.safe_dump({"repo_url": URL, "prompt": "made before the crash"}).encode()
    record = SlotRecord(
        key=stamp(utc(2026, 12, 7, 10)), schedule="hourly", scheduled_for="2026-12-07T10:00:00Z",
        outcome="dropped", reason="", kind="schedule", job_name="hourly-20261207T1000Z-abcdef.yaml",
        created_at="2026-12-07T10:00:01Z", missed=0, dropped=False, job=data.decode(),
    )  # fmt: skip
    claim = state.claim(record)
    assert claim is not None
    # While its maker holds the lock, nobody else drops it.
    assert list(ScheduleState(layout, "hourly").unfinished()) == []
    assert Ticker(layout).tick(config, utc(2026, 12, 7, 10, 0, 30)) == []
    assert inbox(layout) == []
    claim.release()  # the maker is gone
    for _ in range(3):
        Ticker(layout).tick(config, utc(2026, 12, 7, 10, 1))
    assert inbox(layout) == ["hourly-20261207T1000Z-abcdef.yaml"]
    assert (layout.inbox / inbox(layout)[0]).read_bytes() == data


def test_a_cut_short_drop_behind_many_newer_records_is_repaired_at_start(
    layout: Layout,
) -> None:
    """The crash left the 10:00 record undropped; run-nows made six newer records before
    any daemon ticked again. The next daemon's first tick looks at every record."""
    config = make_config(layout.root, hourly={"cron": "0 * * * *", "overlap": "allow"})
    Ticker(layout).tick(config, utc(2026, 12, 7, 9, 30))
    state = ScheduleState(layout, "hourly")
    data = yaml.safe_dump({"repo_url": URL, "prompt": "made before the crash"}).encode()

    def record(minute: int, name: str) -> SlotRecord:
        return SlotRecord(
            key=stamp(utc(2026, 12, 7, 10, minute)), schedule="hourly",
            scheduled_for=iso(utc(2026, 12, 7, 10, minute)), outcome="dropped", reason="",
            kind="schedule", job_name=name, created_at=iso(utc(2026, 12, 7, 10, minute)),
            missed=0, dropped=False, job=data.decode(),
        )  # fmt: skip

    cut_short = state.claim(record(0, "hourly-20261207T1000Z-abcdef.yaml"))
    assert cut_short is not None
    cut_short.release()  # its maker died before the drop
    for minute in range(1, 7):  # newer records whose drops finished
        claim = state.claim(record(minute, f"hourly-now-{minute}.yaml"))
        assert claim is not None
        claim.dropped()
        claim.release()
    Ticker(layout).tick(config, utc(2026, 12, 7, 10, 7))
    assert inbox(layout) == ["hourly-20261207T1000Z-abcdef.yaml"]


# -- overlap ----------------------------------------------------------------------------


def test_overlap_skip_while_a_long_job_runs(layout: Layout) -> None:
    config = make_config(layout.root, minutely={"cron": "* * * * *"})
    ticker = Ticker(layout)
    spool = Spool(layout)
    ticker.tick(config, utc(2026, 12, 7, 9, 59, 30))
    assert len(dropped(ticker.tick(config, utc(2026, 12, 7, 10, 0, 1)))) == 1
    # Queued: the next slot is skipped already.
    assert [d.outcome for d in ticker.tick(config, utc(2026, 12, 7, 10, 1, 1))] == ["skipped"]
    job = spool.claim(inbox(layout)[0])
    assert job is not None  # running, for five minutes
    outcomes = [d for m in range(2, 6) for d in ticker.tick(config, utc(2026, 12, 7, 10, m, 1))]
    assert [d.outcome for d in outcomes] == ["skipped"] * 4
    assert "still running" in outcomes[0].reason
    assert inbox(layout) == []
    spool.finish(job, ok=True)
    assert dropped(ticker.tick(config, utc(2026, 12, 7, 10, 6, 1))) == [utc(2026, 12, 7, 10, 6)]
    assert len(inbox(layout)) == 1


def test_overlap_allow_drops_while_one_runs(layout: Layout) -> None:
    config = make_config(layout.root, minutely={"cron": "* * * * *", "overlap": "allow"})
    ticker = Ticker(layout)
    ticker.tick(config, utc(2026, 12, 7, 9, 59, 30))
    ticker.tick(config, utc(2026, 12, 7, 10, 0, 1))
    assert Spool(layout).claim(inbox(layout)[0]) is not None
    assert len(dropped(ticker.tick(config, utc(2026, 12, 7, 10, 1, 1)))) == 1


# -- pause, resume, run-now -------------------------------------------------------------


def test_pause_and_resume_hold_across_a_restart(layout: Layout) -> None:
    config = make_config(layout.root, hourly={"cron": "0 * * * *", "overlap": "allow"})
    schedule = config.schedules["hourly"]
    Ticker(layout).tick(config, utc(2026, 12, 7, 9, 30))
    assert ScheduleState(layout, "hourly").pause(utc(2026, 12, 7, 9, 40), "ops@host")
    # The daemon restarts (a new ticker, only the disk remembers) and ticks for 3 hours.
    decisions = run_clock(
        Ticker(layout), config, utc(2026, 12, 7, 9, 45), utc(2026, 12, 7, 12, 45),
        timedelta(minutes=5),
    )  # fmt: skip
    assert decisions == [] and inbox(layout) == []
    view = describe(config, layout, utc(2026, 12, 7, 12, 45))[0]
    assert view.paused is not None and view.paused["by"] == "ops@host"
    assert ScheduleState(layout, "hourly").resume(fingerprint(schedule), utc(2026, 12, 7, 12, 50))
    # Restarted again: the slots passed while paused are not run; the next one is.
    assert Ticker(layout).tick(config, utc(2026, 12, 7, 12, 55)) == []
    assert dropped(Ticker(layout).tick(config, utc(2026, 12, 7, 13, 0, 2))) == [
        utc(2026, 12, 7, 13)
    ]
    assert not ScheduleState(layout, "hourly").resume(fingerprint(schedule), utc(2026, 12, 7, 14))


def test_run_now_drops_one_job_even_while_paused(layout: Layout) -> None:
    config = make_config(layout.root, nightly={"cron": "0 3 * * *"})
    ScheduleState(layout, "nightly").pause(utc(2026, 12, 7, 9), "ops@host")
    decision = run_now(config, layout, "nightly", utc(2026, 12, 7, 9, 5))
    assert decision.outcome == "dropped" and decision.path is not None
    job = Spool(layout).claim(decision.path.name)
    assert job is not None
    assert read_origin(layout, job) == {
        "schedule": "nightly", "scheduled_for": "2026-12-07T09:05:00Z", "trigger": "run-now"
    }  # fmt: skip
    # A run-now is not a slot: tonight's 03:00 still runs (once resumed).
    assert ScheduleState(layout, "nightly").newest_slot() is None


def test_a_disabled_schedule_does_not_run_and_restarts_its_count_when_enabled(
    layout: Layout,
) -> None:
    off = make_config(layout.root, hourly={"cron": "0 * * * *", "enabled": False})
    run_clock(Ticker(layout), off, utc(2026, 12, 7, 9), utc(2026, 12, 7, 12), timedelta(minutes=10))
    assert inbox(layout) == []
    on = make_config(layout.root, hourly={"cron": "0 * * * *"})
    assert Ticker(layout).tick(on, utc(2026, 12, 7, 12, 30)) == []  # no catch-up of 12:00
    assert len(dropped(Ticker(layout).tick(on, utc(2026, 12, 7, 13, 0, 1)))) == 1


# -- what a scheduled job carries, and what a job file cannot claim ---------------------


def test_a_scheduled_job_carries_its_schedule_into_exit_json(layout: Layout) -> None:
    config = make_config(layout.root, nightly={"cron": "0 3 * * *"})
    ticker = Ticker(layout)
    ticker.tick(config, utc(2026, 12, 7, 1))
    (decision,) = ticker.tick(config, utc(2026, 12, 7, 3, 0, 1))
    assert decision.path is not None
    job = Spool(layout).claim(decision.path.name)
    assert job is not None
    origin = read_origin(layout, job)
    assert origin == {
        "schedule": "nightly", "scheduled_for": "2026-12-07T03:00:00Z", "trigger": "schedule"
    }  # fmt: skip
    out = layout.out_dir(job.job_id)
    out.mkdir()
    # The worker (the agent can write its exit.json) tries to say otherwise: dropped.
    (out / "exit.json").write_text('{"schedule": "forged", "scheduled_for": "never"}')
    write_exit_json(out, job.job_id, job.source_name, Outcome(JobState.DONE, "ok"), origin)
    record = yaml.safe_load((out / "exit.json").read_text())
    assert (record["schedule"], record["scheduled_for"]) == ("nightly", "2026-12-07T03:00:00Z")


def test_a_job_file_cannot_claim_to_be_from_a_schedule(layout: Layout) -> None:
    config = make_config(layout.root, nightly={"cron": "0 3 * * *"})
    ticker = Ticker(layout)
    ticker.tick(config, utc(2026, 12, 7, 1))
    (decision,) = ticker.tick(config, utc(2026, 12, 7, 3, 0, 1))
    assert decision.path is not None
    name = decision.path.name
    spool = Spool(layout)
    scheduled = spool.claim(name)
    assert scheduled is not None
    # No job key says it: parse_job refuses one.
    with pytest.raises(InvalidJob, match="unknown key"):
        parse_job(yaml.safe_dump({"repo_url": URL, "prompt": "x", "schedule": "nightly"}).encode(),
                  config)  # fmt: skip
    # A user who learns the name (index/ is readable) and drops a file under it gets a
    # file of another inode, and nothing of the schedule's.
    (layout.inbox / name).write_text(yaml.safe_dump({"repo_url": URL, "prompt": "mine"}))
    imposter = spool.claim(name)
    assert imposter is not None
    assert read_origin(layout, imposter) == {}
    assert read_origin(layout, scheduled)["schedule"] == "nightly"


def test_an_invalid_job_template_is_recorded_and_nothing_dropped(
    layout: Layout, caplog: Any
) -> None:
    config = _build(
        {"root": str(layout.root), "schedules": {"bad": {
            "cron": "0 * * * *", "job": {"repo_url": URL, "prompt": "x", "flags": ["--yolo"]},
        }}},
        "test",
    )  # fmt: skip
    ticker = Ticker(layout)
    ticker.tick(config, utc(2026, 12, 7, 9, 30))
    (decision,) = ticker.tick(config, utc(2026, 12, 7, 10, 0, 1))
    assert decision.outcome == "invalid" and "flags" in decision.reason
    assert inbox(layout) == []
    assert "its job is refused" in caplog.text
    assert describe(config, layout, utc(2026, 12, 7, 10, 1))[0].job_problem


def test_state_is_private_to_the_daemon(layout: Layout) -> None:
    config = make_config(layout.root, hourly={"cron": "0 * * * *"})
    Ticker(layout).tick(config, utc(2026, 12, 7, 9, 30))
    Ticker(layout).tick(config, utc(2026, 12, 7, 10, 0, 1))
    slots = layout.state / "schedules" / "hourly" / "slots"
    assert os.stat(slots).st_mode & 0o077 == 0
    assert all(os.stat(p).st_mode & 0o077 == 0 for p in slots.iterdir())
    assert os.stat(layout.state).st_mode & 0o077 == 0


def test_the_view_shows_the_next_three_times_and_the_last_run(layout: Layout) -> None:
    config = make_config(layout.root, nightly={"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    ticker = Ticker(layout)
    ticker.tick(config, utc(2026, 3, 27, 12))
    ticker.tick(config, utc(2026, 3, 28, 1, 31))
    (view,) = describe(config, layout, utc(2026, 3, 28, 12))
    assert view.next_times == [
        utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)
    ]  # fmt: skip
    assert view.last_run is not None and view.last_run.scheduled_for == "2026-03-28T01:30:00Z"
    assert view.last_run_state == "queued"


def test_ticking_is_cheap(layout: Layout) -> None:
    """A tick with nothing due reads a few small files per schedule."""
    import time

    config = make_config(
        layout.root, **{f"s{n}": {"cron": "*/5 * * * *", "overlap": "allow"} for n in range(20)}
    )
    ticker = Ticker(layout)
    ticker.tick(config, utc(2026, 12, 7, 9, 59))
    began = time.perf_counter()
    for _ in range(20):
        ticker.tick(config, utc(2026, 12, 7, 10, 1))
    per_tick = (time.perf_counter() - began) / 20
    assert per_tick < 0.25, per_tick
