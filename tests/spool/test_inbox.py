"""The inbox's bookkeeping: when a file known only from a scan may be claimed."""

from __future__ import annotations

from watcherd.spool.folders import InboxEntry
from watcherd.spool.inbox import Inbox

SETTLE = 0.2
NOW_WALL = 1_800_000_000.0  # the wall clock (file times are on it)


def entry(name: str, changed_ago: float, ino: int = 1) -> InboxEntry:
    ctime_ns = int((NOW_WALL - changed_ago) * 1e9)
    return InboxEntry(name, (ino, 10, ctime_ns), ctime_ns, True, "file", ctime_ns=ctime_ns)


def inbox() -> Inbox:
    return Inbox(SETTLE, stat=lambda name: None, wall_clock=lambda: NOW_WALL)


def test_a_file_unchanged_for_longer_than_settle_is_ready_from_the_first_scan() -> None:
    box = inbox()
    box.rescan([entry("old.yaml", changed_ago=60.0, ino=1), entry("new.yaml", 0.01, ino=2)], 100.0)
    assert box.ready(100.0, limit=10) == ["old.yaml"]  # a queue found at start-up: at once
    assert sorted(box.ready(100.0 + SETTLE, limit=10)) == ["new.yaml", "old.yaml"]


def test_a_file_changed_just_now_waits_its_settle_time() -> None:
    box = inbox()
    box.rescan([entry("new.yaml", changed_ago=SETTLE / 2)], 100.0)
    assert box.ready(100.0, limit=10) == []
    assert box.next_deadline(100.0) == 100.0 + SETTLE
    assert box.ready(100.0 + SETTLE, limit=10) == ["new.yaml"]


def test_an_unknown_ctime_keeps_the_settle_rule() -> None:
    box = inbox()
    box.rescan([InboxEntry("x.yaml", (1, 10, 5), 5, True, "file")], 100.0)  # no ctime
    assert box.ready(100.0, limit=10) == []


def test_a_file_found_open_for_writing_is_not_made_ready_again_by_its_old_ctime() -> None:
    box = inbox()
    old = entry("slow.yaml", changed_ago=60.0)
    box.rescan([old], 100.0)
    assert box.ready(100.0, limit=10) == ["slow.yaml"]
    box.being_written("slow.yaml", 100.0)  # has_writer said yes at the claim
    box.rescan([old], 100.05)  # unchanged since: it still waits for its close or settle
    assert box.ready(100.05, limit=10) == []
