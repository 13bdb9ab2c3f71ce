"""A schedule's times: its cron expression read on the wall clock of its time zone, as
UTC instants, each real instant at most once.

cronsim parses and steps the expression on a naive wall clock; the time zone is applied
here, because neither library gets every DST case right on its own (compared on the 2026
change days, Europe/Berlin and America/New_York):

- croniter 7 fires a daily ``30 2 * * *`` twice on the autumn day, once in each pass
  through the repeated hour. cronsim fires it once.
- cronsim, given a zone, skips the whole repeated hour for ``* * * * *`` (from 02:59 CEST
  it steps to 03:00 CET: 61 real minutes without a run), though it runs ``0 * * * *`` in
  both passes.

The rules, as Debian's cron has them:

- A wall time that does not exist (spring) runs once, at the next valid time: a daily
  02:30 runs at 03:00 that night; every-minute and hourly runs that fall into the gap
  become that one instant.
- A wall time that exists twice (autumn) runs once, in the first pass, for a schedule
  with a fixed hour; one whose hour field is every hour (``*``, ``*/1``, ``0-23``) runs in
  both passes, because they are two real hours (every minute stays every real minute).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

# Slots counted one by one after downtime; past this the count is reported as "at least".
COUNT_LIMIT = 20_000
# Wall clocks move by at most this at a change (2 h, Antarctica/Troll): how far before a
# moment the wall-clock walk starts so as to see every slot after it.
_MAX_SHIFT = timedelta(hours=3)


@dataclass(frozen=True)
class Due:
    slot: datetime  # the newest slot due (UTC)
    missed: int  # slots before it since the last one handled, not run (catch-up: latest)
    counted_all: bool = True  # False: missed is a lower bound (COUNT_LIMIT reached)


class Plan:
    def __init__(self, cron: str, timezone: str = "UTC") -> None:
        self.cron = cron
        self.zone = ZoneInfo(timezone)
        # Every hour however it is written (*, */1, 0-23, a list of all 24): both passes
        # through a repeated hour are then real hours of it.
        self._every_hour = CronSim(cron, datetime(2000, 1, 1)).hours == set(range(24))

    def after(self, moment: datetime) -> Iterator[datetime]:
        """The slots strictly after ``moment``, in order, as UTC datetimes."""
        moment = moment.astimezone(UTC)
        wall = moment.astimezone(self.zone).replace(tzinfo=None) - _MAX_SHIFT
        pending: list[datetime] = []
        last = moment
        for naive in CronSim(self.cron, wall.replace(second=0, microsecond=0)):
            first, second = self._instants(naive)
            heapq.heappush(pending, first)
            if second is not None:
                heapq.heappush(pending, second)
            # No later wall time maps before ``first``: what is not later is final.
            while pending and pending[0] <= first:
                slot = heapq.heappop(pending)
                if slot > last:
                    last = slot
                    yield slot

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
        wall = now.astimezone(self.zone).replace(tzinfo=None) + _MAX_SHIFT
        for naive in CronSim(self.cron, wall, reverse=True):
            first, second = self._instants(naive)
            for slot in (second, first):
                if slot is not None and slot <= now:
                    return Due(slot, counted, counted_all=False)
        return None  # pragma: no cover - cronsim iterates forever or raises

    def _instants(self, naive: datetime) -> tuple[datetime, datetime | None]:
        """The instant a wall time runs at, and a second one where the wall time comes
        twice and the schedule runs every hour."""
        first = naive.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = naive.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if first == second:
            return first, None
        if first > second:  # fold 0 after fold 1: the wall time does not exist (spring)
            return self._next_valid(naive, second, first), None
        return first, second if self._every_hour else None

    def _next_valid(self, naive: datetime, low: datetime, high: datetime) -> datetime:
        """The first instant whose wall time is past ``naive`` (the change itself)."""
        while high - low > timedelta(seconds=1):
            middle = low + (high - low) / 2
            if middle.astimezone(self.zone).replace(tzinfo=None) > naive:
                high = middle
            else:
                low = middle
        return high.replace(microsecond=0)
