"""``watcherd schedules`` (each schedule: its next three times, local and UTC, its last run
and state) and ``watcherd schedule pause|resume|run-now ID``: the operator's commands. They
write the daemon's private state folder, so only the daemon's user (or root) can run them;
the daemon reads the same files at its next tick, kept across restarts."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from watcherd.config import Config
from watcherd.job.spec import InvalidJob
from watcherd.spool.folders import Layout
from watcherd.triggers.schedules import (
    ScheduleView,
    describe,
    operator,
    run_now,
    set_paused,
    view_json,
)


def add_commands(commands: Any) -> None:
    """The two subcommands, on main's subparsers."""
    listing = commands.add_parser(
        "schedules", help="the configured schedules: next times, last run, paused or not"
    )
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(command=list_schedules)
    one = commands.add_parser("schedule", help="pause, resume or run a schedule now")
    one.add_argument("action", choices=("pause", "resume", "run-now"))
    one.add_argument("schedule_id", metavar="ID")
    one.set_defaults(command=schedule_action)


def list_schedules(config: Config, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    views = describe(config, Layout(config.root), now)
    if args.json:
        print(json.dumps([view_json(view) for view in views], indent=2))
        return 0
    if not views:
        print("no schedules in the config (README: Schedules and hooks)")
        return 0
    for view in views:
        print("\n".join(_lines(view)))
    return 0


def schedule_action(config: Config, args: argparse.Namespace) -> int:
    schedule = config.schedules.get(args.schedule_id)
    if schedule is None:
        known = ", ".join(sorted(config.schedules)) or "none are configured"
        print(f"watcherd: no schedule {args.schedule_id!r} (schedules: {known})", file=sys.stderr)
        return 2
    layout = Layout(config.root)
    if not layout.inbox.is_dir():
        print(f"watcherd: no work root at {config.root} (no inbox/ there): check --root, or "
              "start the daemon once", file=sys.stderr)  # fmt: skip
        return 1
    now = datetime.now(UTC)
    try:
        if args.action == "pause":
            changed = set_paused(config, layout, schedule.id, True, now, operator())
            print(f"{schedule.id}: {'paused' if changed else 'was paused already'}")
        elif args.action == "resume":
            if set_paused(config, layout, schedule.id, False, now, operator()):
                print(f"{schedule.id}: resumed; its slots from now on run, not those passed "
                      "while it was paused")  # fmt: skip
            else:
                print(f"{schedule.id}: was not paused")
        else:
            decision = run_now(config, layout, schedule.id, now)
            print(decision.path)
            if decision.reason:
                print(f"note: {decision.reason}", file=sys.stderr)
    except InvalidJob as exc:
        print(f"watcherd: schedule {schedule.id}: its job is refused: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(f"watcherd: cannot write {exc.filename}: the daemon's state is its own; run this "
              "as the daemon's user", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _lines(view: ScheduleView) -> list[str]:
    schedule = view.schedule
    if not schedule.enabled:
        state = "disabled in the config"
    elif view.paused is not None:
        state = f"paused since {view.paused.get('paused_at')} by {view.paused.get('by')}"
    else:
        state = "active"
    lines = [
        f"{schedule.id}: {schedule.cron} ({schedule.timezone}), catchup {schedule.catchup}, "
        f"overlap {schedule.overlap}: {state}"
    ]
    for moment in view.next_times:
        local = moment.astimezone(schedule.zone)
        lines.append(f"  next  {local:%a %Y-%m-%d %H:%M %Z}  ({moment:%Y-%m-%d %H:%M} UTC)")
    if view.last_run is not None:
        lines.append(
            f"  last run  {view.last_run.scheduled_for} ({view.last_run.kind}) as "
            f"{view.last_run.job_name}: {view.last_run_state or 'unknown'}"
        )
    else:
        lines.append("  last run  none yet")
    last = view.last
    if last is not None and last is not view.last_run and last.outcome != "dropped":
        lines.append(f"  last slot {last.scheduled_for}: {last.outcome}: {last.reason}")
    if view.job_problem:
        lines.append(f"  problem   its job is refused: {view.job_problem}")
    return lines
