"""The operator's schedules: each due slot becomes one job file in the inbox, exactly once,
however many daemons tick on one root and however often they restart.

``Ticker.tick(config, now)`` is all the daemon calls (from its main loop); everything is
decided from ``now`` and what is on disk, so tests drive it with a fixed clock. For each
enabled, unpaused schedule: the newest slot in (since, now] is due unless a record of it,
or of a later slot, exists (watcherd.triggers.state). Then, by policy:

- catchup ``latest`` runs the newest missed slot once (the count passed over is logged);
  ``none`` records a slot found more than LATE_AFTER after its time as missed instead.
- overlap ``skip`` records the slot as skipped while a job of the schedule is queued or
  running; ``allow`` drops it all the same.

The job is the schedule's ``job:`` mapping with {date}, {time}, {datetime}, {utc} and
{schedule} filled into its prompt (nothing else is templated), checked by the same
``parse_job`` the daemon runs, and dropped under ``<id>-<slot UTC>-<hex>.yaml`` with its
origin (schedule, scheduled_for) on record for exit.json and notifications.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from watcherd.config import Config
from watcherd.config.schedules import Schedule
from watcherd.job.spec import InvalidJob, parse_job
from watcherd.spool.folders import Layout
from watcherd.spool.lookup import Place, resolve
from watcherd.spool.origin import prune_origins
from watcherd.triggers.cron import Plan
from watcherd.triggers.dropper import drop_exact
from watcherd.triggers.state import Claim, ScheduleState, SlotRecord, iso, stamp
from watcherd.util.safeio import read_json_object

log = logging.getLogger("watcherd.schedules")

LATE_AFTER = 300.0  # catchup none: a slot first seen this long after its time was missed
IDLE_TICK = 60.0  # at most this long between ticks, whatever the next slot
ORIGIN_RETENTION = 30 * 24 * 3600.0
OVERLAP_LOOKBACK = 20  # records looked at for a job of the schedule still queued or running
REPAIR_LOOKBACK = 5  # records looked at for a cut-short drop, at each tick after the first
_SLOT_FIELD = re.compile(r"\{(date|time|datetime|utc|schedule)\}")


@dataclass(frozen=True)
class Decision:
    schedule: str
    outcome: str  # dropped | skipped | missed | invalid | lost (another daemon made it)
    scheduled_for: datetime
    reason: str = ""
    path: Path | None = None


def fingerprint(schedule: Schedule) -> str:
    """What, when it changes, restarts the count of a schedule's slots (not its job)."""
    return f"{schedule.cron}|{schedule.timezone}|{schedule.enabled}"


def render_job(schedule: Schedule, slot: datetime) -> bytes:
    """The schedule's job file for ``slot``: {date}-style fields in the prompt only."""
    local = slot.astimezone(schedule.zone)
    values = {
        "date": local.strftime("%Y-%m-%d"),
        "time": local.strftime("%H:%M"),
        "datetime": local.isoformat(timespec="minutes"),
        "utc": iso(slot),
        "schedule": schedule.id,
    }
    job: dict[str, Any] = dict(schedule.job)
    prompt = job.get("prompt")
    if isinstance(prompt, str):
        job["prompt"] = _SLOT_FIELD.sub(lambda m: values[m.group(1)], prompt)
    text: str = yaml.safe_dump(job, sort_keys=False, allow_unicode=True, width=100)
    return text.encode()


def job_name(schedule_id: str, slot: datetime) -> str:
    """Derived from the schedule and the slot; the random tail keeps anyone who can write
    the inbox from taking it first."""
    return (
        f"{schedule_id}-{slot.astimezone(UTC).strftime('%Y%m%dT%H%MZ')}-{secrets.token_hex(3)}.yaml"
    )


def check_jobs(config: Config) -> dict[str, str]:
    """Each schedule whose job would be refused, with the reason (`watcherd schedules`,
    and the daemon's log when it starts)."""
    problems = {}
    for schedule in config.schedules.values():
        try:
            parse_job(render_job(schedule, datetime.now(UTC)), config)
        except InvalidJob as exc:
            problems[schedule.id] = str(exc)
    return problems


class Ticker:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._last_prune = 0.0
        self._checked: Config | None = None
        # Schedules whose every record was looked at for a cut-short drop since this
        # ticker began; after that, a tick looks only at the newest few.
        self._repaired: set[str] = set()

    def tick(self, config: Config, now: datetime) -> list[Decision]:
        """Handle every due slot; never raises for one schedule's trouble."""
        if config is not self._checked:
            self._checked = config  # a new config: say now which jobs would be refused
            for schedule_id, problem in check_jobs(config).items():
                log.error("schedule %s: its job is refused: %s", schedule_id, problem)
        decisions = []
        for schedule in config.schedules.values():
            try:
                decision = self.tick_one(config, schedule, now)
            except OSError as exc:
                log.error("schedule %s: %s; tried again at the next tick", schedule.id, exc)
                continue
            except Exception:  # the daemon keeps running, and the other schedules too
                log.exception("schedule %s: tick failed; tried again at the next", schedule.id)
                continue
            if decision is not None:
                decisions.append(decision)
        if now.timestamp() - self._last_prune > 3600:
            self._last_prune = now.timestamp()
            try:
                self._prune(config)
            except OSError as exc:
                log.warning("schedules: pruning old records: %s", exc)
        return decisions

    def seconds_to_next(self, config: Config, now: datetime) -> float:
        """Until the next slot of any schedule (at most IDLE_TICK): the daemon's timer."""
        wait = IDLE_TICK
        for schedule in config.schedules.values():
            if not schedule.enabled:
                continue
            upcoming = Plan(schedule.cron, schedule.timezone).next_times(now, 1)
            if upcoming:
                wait = min(wait, (upcoming[0] - now).total_seconds())
        return max(wait, 0.0)

    def tick_one(self, config: Config, schedule: Schedule, now: datetime) -> Decision | None:
        state = ScheduleState(self.layout, schedule.id)
        since = state.since(fingerprint(schedule), now)
        if not schedule.enabled or state.paused() is not None:
            return None
        self._repair(config, state, everything=schedule.id not in self._repaired)
        self._repaired.add(schedule.id)
        newest = state.newest_slot()
        after = max(since, newest) if newest is not None else since
        due = Plan(schedule.cron, schedule.timezone).due(after, now)
        if due is None:
            return None
        slot = due.slot
        outcome, reason, name, data = "dropped", "", None, None
        late = (now - slot).total_seconds()
        if schedule.catchup == "none" and late > LATE_AFTER:
            outcome, reason = "missed", f"found {late:.0f}s after its time (catchup: none)"
        elif schedule.overlap == "skip" and (busy := self.active_job(state)) is not None:
            outcome, reason = (
                "skipped",
                f"job {busy} of this schedule is still {self.where_is(busy)}",
            )
        else:
            data = render_job(schedule, slot)
            try:
                parse_job(data, config)
                name = job_name(schedule.id, slot)
            except InvalidJob as exc:
                outcome, reason, data = "invalid", f"its job is refused: {exc}", None
        if due.missed:
            passed = f"{due.missed}{'' if due.counted_all else '+'}"
            reason = f"{reason}; " if reason else ""
            reason += f"{passed} earlier slot(s) since {iso(after)} passed over, not run"
        record = SlotRecord(
            key=stamp(slot), schedule=schedule.id, scheduled_for=iso(slot), outcome=outcome,
            reason=reason, kind="schedule", job_name=name, created_at=iso(now),
            missed=due.missed, dropped=False, job=data.decode() if data else None,
        )  # fmt: skip
        claim = state.claim(record)
        if claim is None:
            return Decision(schedule.id, "lost", slot, "another daemon handled this slot")
        return self._carry_out(state, record, claim, slot)

    def _carry_out(
        self, state: ScheduleState, record: SlotRecord, claim: Claim, slot: datetime
    ) -> Decision:
        if record.outcome != "dropped":
            claim.release()
            level = logging.ERROR if record.outcome == "invalid" else logging.WARNING
            log.log(level, "schedule %s: slot %s %s: %s", record.schedule, record.scheduled_for,
                    record.outcome, record.reason)  # fmt: skip
            return Decision(record.schedule, record.outcome, slot, record.reason)
        try:
            path = self._drop(record)
            claim.dropped()
        finally:
            claim.release()  # a failed drop is repaired at the next tick
        what = "slot" if record.kind == "schedule" else record.kind
        note = f" ({record.reason})" if record.reason else ""
        log.info("schedule %s: %s %s dropped as %s%s", record.schedule, what,
                 record.scheduled_for, path.name, note)  # fmt: skip
        return Decision(record.schedule, "dropped", slot, record.reason, path)

    def _drop(self, record: SlotRecord) -> Path:
        assert record.job_name is not None and record.job is not None
        origin = {"schedule": record.schedule, "scheduled_for": record.scheduled_for,
                  "trigger": record.kind}  # fmt: skip
        try:
            return drop_exact(self.layout, record.job_name, record.job.encode(), origin)
        except FileExistsError:
            return self.layout.inbox / record.job_name  # a repair found it there

    def _repair(self, config: Config, state: ScheduleState, everything: bool) -> None:
        """A record whose drop a crash cut short: its job, unless it made it. At start all
        records are looked at (run-nows may have made many newer ones since the crash),
        then the newest few at each tick (another process's crash, seen within a tick)."""
        for record, claim in state.unfinished(None if everything else REPAIR_LOOKBACK):
            try:
                if record.job_name and resolve(self.layout, record.job_name) is None:
                    log.warning("schedule %s: slot %s: dropping its job after a crash",
                                state.id, record.scheduled_for)  # fmt: skip
                    self._drop(record)
                claim.dropped()
            finally:
                claim.release()

    def active_job(self, state: ScheduleState) -> str | None:
        """The name of a job of this schedule still queued or running, if any."""
        for record in state.records(OVERLAP_LOOKBACK):
            if record.outcome != "dropped" or not record.job_name:
                continue
            if not record.dropped:
                return record.job_name  # being dropped right now (or to be repaired)
            found = resolve(self.layout, record.job_name)
            if found is not None and found.place in (Place.QUEUED, Place.RUNNING):
                return record.job_name
        return None

    def where_is(self, name: str) -> str:
        found = resolve(self.layout, name)
        return "queued" if found is None else found.place.value

    def _prune(self, config: Config) -> None:
        for schedule in config.schedules.values():
            ScheduleState(self.layout, schedule.id).prune()
        prune_origins(self.layout, ORIGIN_RETENTION)


def run_now(config: Config, layout: Layout, schedule_id: str, now: datetime) -> Decision:
    """The operator's run-now: one job of the schedule at once, paused or not, whatever its
    overlap policy (a job already queued or running is named in the reason)."""
    schedule = config.schedules[schedule_id]
    state = ScheduleState(layout, schedule_id)
    data = render_job(schedule, now)
    parse_job(data, config)  # InvalidJob: the caller says why
    ticker = Ticker(layout)
    busy = ticker.active_job(state)
    record = SlotRecord(
        key=f"{stamp(now)}-now-{secrets.token_hex(3)}", schedule=schedule_id,
        scheduled_for=iso(now), outcome="dropped", kind="run-now",
        reason=f"job {busy} of this schedule is still {ticker.where_is(busy)}" if busy else "",
        job_name=job_name(schedule_id, now), created_at=iso(now), missed=0, dropped=False,
        job=data.decode(),
    )  # fmt: skip
    claim = state.claim(record)
    assert claim is not None  # a random key
    return ticker._carry_out(state, record, claim, now)


@dataclass(frozen=True)
class ScheduleView:
    """What `watcherd schedules` shows of one schedule."""

    schedule: Schedule
    next_times: list[datetime]
    paused: Mapping[str, Any] | None
    last: SlotRecord | None  # the newest record (run, skipped, missed, ...)
    last_run: SlotRecord | None  # the newest that dropped a job
    last_run_state: str | None  # queued, running, done, failed, timeout, invalid
    job_problem: str | None


def describe(config: Config, layout: Layout, now: datetime) -> list[ScheduleView]:
    problems = check_jobs(config)
    views = []
    for schedule in config.schedules.values():
        state = ScheduleState(layout, schedule.id)
        records = state.records(50)
        last_run = next((r for r in records if r.outcome == "dropped"), None)
        views.append(
            ScheduleView(
                schedule=schedule,
                next_times=Plan(schedule.cron, schedule.timezone).next_times(now, 3),
                paused=state.paused(),
                last=records[0] if records else None,
                last_run=last_run,
                last_run_state=_job_state(layout, last_run.job_name) if last_run else None,
                job_problem=problems.get(schedule.id),
            )
        )
    return views


def _job_state(layout: Layout, name: str | None) -> str | None:
    found = resolve(layout, name) if name else None
    if found is None:
        return None
    if found.place.finished and found.job_id:
        record = read_json_object(layout.out_dir(found.job_id) / "exit.json")
        if record and isinstance(record.get("state"), str):
            return str(record["state"])
    return found.place.value


def operator() -> str:
    """Who paused a schedule: the user and host, for the record."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def set_paused(
    config: Config, layout: Layout, schedule_id: str, paused: bool, now: datetime, by: str
) -> bool:
    """Pause or resume (the operator's: the CLI, an admin API); False when it already was.
    Kept on disk across restarts; a resume does not run the slots passed while paused."""
    state = ScheduleState(layout, schedule_id)
    if paused:
        return state.pause(now, by)
    return state.resume(fingerprint(config.schedules[schedule_id]), now)


def view_json(view: ScheduleView) -> dict[str, Any]:
    """A schedule's view as JSON (`watcherd schedules --json`, the API)."""
    schedule = view.schedule
    last = view.last_run
    return {
        "id": schedule.id, "cron": schedule.cron, "timezone": schedule.timezone,
        "enabled": schedule.enabled, "catchup": schedule.catchup, "overlap": schedule.overlap,
        "paused": dict(view.paused) if view.paused is not None else None,
        "next": [
            {"utc": iso(m), "local": m.astimezone(schedule.zone).isoformat()}
            for m in view.next_times
        ],
        "last_run": None if last is None else {
            "scheduled_for": last.scheduled_for, "kind": last.kind, "job": last.job_name,
            "state": view.last_run_state,
        },
        "last_slot": None if view.last is None else {
            "scheduled_for": view.last.scheduled_for, "outcome": view.last.outcome,
            "reason": view.last.reason,
        },
        "job_problem": view.job_problem,
    }  # fmt: skip
