from __future__ import annotations

from watcherd.settle import SettleTracker


def test_file_ready_only_after_stable_for_settle_time() -> None:
    tracker = SettleTracker(0.2)
    assert tracker.observe([("a.yaml", (1, 10, 100))], now=0.0) == []
    assert tracker.next_deadline(0.0) == 0.2
    assert tracker.observe([("a.yaml", (1, 10, 100))], now=0.1) == []
    assert tracker.observe([("a.yaml", (1, 10, 100))], now=0.2) == ["a.yaml"]


def test_slow_writer_never_ready() -> None:
    tracker = SettleTracker(0.2)
    for step in range(100):  # one byte every 10 ms for a second
        ready = tracker.observe([("a.yaml", (1, step, step * 10_000_000))], now=step * 0.01)
        assert ready == []


def test_forgotten_when_gone_and_new_inode_starts_over() -> None:
    tracker = SettleTracker(0.2)
    tracker.observe([("a.yaml", (1, 10, 100))], now=0.0)
    tracker.observe([], now=0.1)
    assert tracker.observe([("a.yaml", (1, 10, 100))], now=0.25) == []
    assert tracker.observe([("a.yaml", (2, 10, 100))], now=0.5) == []
