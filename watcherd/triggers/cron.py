"""A schedule's times: its cron expression read in its time zone, as UTC instants.

cronsim (not croniter) reads the expressions: on the autumn day croniter 7 fires a daily
``30 2 * * *`` twice in Europe/Berlin, once in each pass through the repeated hour;
cronsim fires it once. On the spring day both run a slot that does not exist (02:30) once,
at the next valid time (03:00). Where the clock goes back, a schedule with a fixed hour
runs only in the first pass through the repeated hour (cronsim still yields both passes of
``*/30 1 * * *``; this module drops the second), while one whose hour field is ``*`` runs
in both: they are two real hours, as Debian's cron does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from cronsim import CronSim

# Slots counted one by one after downtime; past this the count is reported as "at least".
COUNT_LIMIT = 20_000


@dataclass(frozen=True)
class Due:
    slot: datetime  # the newest slot due (UTC)
    missed: int  # slots before it since the last one handled, not run (catch-up: latest)
    counted_all: bool = True  # False: missed is a lower bound (COUNT_LIMIT reached)


class Plan:
    def __init__(self, cron: str, timezone: str = "UTC") -> None:
        self.cron = cron
        self.zone = ZoneInfo(timezone)
        self._every_hour = cron.split()[1] == "*"

    def after(self, moment: datetime) -> Iterator[datetime]:
        """The slots strictly after ``moment``, in order, as UTC datetimes."""
        start = moment.astimezone(self.zone)
        for local in CronSim(self.cron, start):
            if local <= start or self._second_pass(local):
                continue
            yield local.astimezone(UTC)

    def next_times(self, moment: datetime, count: int) -> list[datetime]:
        times = []
        for slot in self.after(moment):
            times.append(slot)
            if len(times) == count:
                break
        return times

    def due(self, since: datetime, now: datetime) -> Due | None:
        """The newest slot in (since, now], and how many earlier ones it passes over."""
        newest: datetime | None = None
        seen = 0
        for slot in self.after(since):
            if slot > now:
                break
            if newest is not None:
                seen += 1
            newest = slot
            if seen >= COUNT_LIMIT:
                return self._due_far_back(now, seen)
        return None if newest is None else Due(newest, seen)

    def _due_far_back(self, now: datetime, counted: int) -> Due | None:
        """Down for longer than COUNT_LIMIT slots: the newest slot, found backwards."""
        local_now = now.astimezone(self.zone)
        for local in CronSim(self.cron, local_now, reverse=True):
            if local > local_now or self._second_pass(local):
                continue
            return Due(local.astimezone(UTC), counted, counted_all=False)
        return None  # pragma: no cover - cronsim iterates forever or raises

    def _second_pass(self, local: datetime) -> bool:
        """A wall time the clock shows twice (autumn), in its second pass, for a schedule
        with a fixed hour: skipped, so that the repeated hour runs it once."""
        if self._every_hour or not local.fold:
            return False
        return local.replace(fold=0).utcoffset() != local.utcoffset()
