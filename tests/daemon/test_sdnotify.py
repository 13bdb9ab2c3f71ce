"""sd_notify: the exact datagrams on a real socket, the watchdog's timing, and a real
daemon whose watchdog pings stop while its main loop is stalled."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.helpers import TESTS, DaemonProcess, wait_finished, wait_for, write_job
from tests.support.notify_socket import NotifySocket, unique_abstract_name
from watcherd.daemon.sdnotify import Notifier, QueueCounts, watchdog_interval

StartDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def received(listener: NotifySocket, count: int) -> list[str]:
    return wait_for(
        lambda: (texts := listener.texts()) and len(texts) >= count and texts,
        5,
        f"{count} datagram(s)",
    )


# -- messages --------------------------------------------------------------------------


def test_state_changes_are_sent_as_exact_datagrams(listener: NotifySocket) -> None:
    notifier = Notifier.from_environ(listener.environ())
    assert notifier.enabled
    notifier.ready("inbox 0, running 0, done 0, failed 0")
    notifier.status("inbox 1, running 0, done 0, failed 0")
    notifier.stopping("stopping")
    notifier.close()
    assert received(listener, 3) == [
        "READY=1\nSTATUS=inbox 0, running 0, done 0, failed 0",
        "STATUS=inbox 1, running 0, done 0, failed 0",
        "STOPPING=1\nSTATUS=stopping",
    ]


def test_reloading_carries_the_monotonic_clock(listener: NotifySocket) -> None:
    notifier = Notifier(listener.address)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.ready()
    first, second = received(listener, 2)
    assert first.split("\n")[0] == "RELOADING=1"
    name, _, value = first.split("\n")[1].partition("=")
    assert name == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert second == "READY=1"  # the status did not change, so it is not repeated


def test_abstract_socket_address() -> None:
    name = unique_abstract_name()
    listener = NotifySocket(abstract_name=name)
    try:
        Notifier.from_environ({"NOTIFY_SOCKET": f"@{name}"}).ready()
        assert received(listener, 1) == ["READY=1"]
    finally:
        listener.close()


def test_status_is_one_line_and_only_sent_when_it_changes(listener: NotifySocket) -> None:
    notifier = Notifier(listener.address)
    notifier.status("two\nlines")
    notifier.status("two\nlines")
    notifier.status("other")
    assert received(listener, 2) == ["STATUS=two lines", "STATUS=other"]


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_due_in() is None  # no socket, so no watchdog either
    notifier.ready("x")
    notifier.tick("y")  # does nothing, raises nothing


@pytest.mark.parametrize("address", ["relative/notify.sock", "vsock:2:1234"])
def test_an_address_sd_notify_would_refuse_is_ignored(
    address: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        notifier = Notifier(address, watchdog_seconds=1.0)
    assert not notifier.enabled
    assert notifier.watchdog_due_in() is None
    assert "not notifying systemd" in caplog.text


def test_a_missing_socket_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    with caplog.at_level(logging.WARNING):
        notifier.ready()
    assert "could not notify systemd (READY=1)" in caplog.text


# -- the watchdog ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "4242"}, 0.2),  # our pid
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, None),  # someone else's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(environ, pid=4242) == expected


def test_a_watchdog_meant_for_another_process_is_not_fed(listener: NotifySocket) -> None:
    environ = listener.environ(watchdog_usec=300_000) | {"WATCHDOG_PID": str(os.getpid() + 1)}
    notifier = Notifier.from_environ(environ)
    assert notifier.enabled
    assert notifier.watchdog_due_in() is None
    notifier.tick("s")
    assert received(listener, 1) == ["STATUS=s"]


def test_tick_pings_at_most_every_third_of_the_interval(listener: NotifySocket) -> None:
    clock = FakeClock()
    notifier = Notifier(listener.address, watchdog_seconds=0.3, clock=clock)
    assert notifier.watchdog_due_in() == 0.0  # the first turn of the loop pings at once
    notifier.tick("a")
    assert notifier.watchdog_due_in() == pytest.approx(0.1)
    clock.now += 0.05
    notifier.tick("a")  # not due, status unchanged: nothing sent
    notifier.tick("b")  # not due, but the status changed
    assert notifier.watchdog_due_in() == pytest.approx(0.05)
    clock.now += 0.05
    assert notifier.watchdog_due_in() == 0.0
    notifier.tick("b")
    clock.now += 0.5  # a stalled loop: no tick, so no ping, however long
    notifier.tick("b")
    assert received(listener, 4) == ["WATCHDOG=1\nSTATUS=a", "STATUS=b", "WATCHDOG=1", "WATCHDOG=1"]


def test_queue_counts_from_many_threads() -> None:
    counts = QueueCounts(inbox=3, running=2)
    threads = [
        threading.Thread(target=lambda ok=ok: [counts.finished(ok) for _ in range(500)])
        for ok in (True, False, True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts.status_text() == "inbox 3, running 2, done 1000, failed 500"


# -- a real daemon ---------------------------------------------------------------------


@pytest.mark.docker
def test_watchdog_pings_stop_while_the_main_loop_is_stalled_and_resume_after(
    tmp_path: Path, listener: NotifySocket, start_daemon: StartDaemon
) -> None:
    watchdog_seconds = 0.5  # pings every 1/6 s; short, with room for a busy test machine
    stall = tmp_path / "stall"
    daemon = start_daemon(
        env=listener.environ(watchdog_usec=int(watchdog_seconds * 1e6))
        | {
            "PYTHONPATH": str(TESTS / "support" / "hooks"),
            "WATCHERD_TEST_STALL_FILE": str(stall),
        }
    )
    assert received(listener, 1)[0] == "READY=1\nSTATUS=inbox 0, running 0, done 0, failed 0"

    # Idle, the loop still turns for the watchdog: its wait is bounded by the ping period.
    idle_since = time.monotonic()
    wait_for(lambda: len(listener.pings(idle_since)) >= 5, 10, "pings from an idle daemon")
    idle = listener.pings(idle_since)
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(idle)]
    assert max(gaps) < watchdog_seconds  # always in time for systemd

    stall.touch()
    wait_for(stall.with_suffix(".entered").exists, 10, "the main loop to stall")
    stalled_since = time.monotonic()
    # Nothing to poll for: the test is that nothing arrives. Three whole intervals, after
    # which systemd would long since have killed the daemon.
    time.sleep(3 * watchdog_seconds)
    assert listener.pings(stalled_since) == []
    assert daemon.alive()  # stalled, not dead: only the main loop is stuck

    stall.unlink()
    resumed_since = time.monotonic()
    wait_for(lambda: len(listener.pings(resumed_since)) >= 3, 10, "pings after the stall")


@pytest.mark.docker
def test_status_shows_the_queue_and_outcomes(
    work_root: Path, listener: NotifySocket, start_daemon: StartDaemon, repo_url: str
) -> None:
    start_daemon(env=listener.environ())
    inbox = work_root / "inbox"
    write_job(inbox, "ok.yaml", repo_url=repo_url, prompt="succeed")
    wait_finished(work_root, "ok.yaml")
    (inbox / "broken.yaml").write_text("prompt: [unclosed\n")
    wait_finished(work_root, "broken.yaml")
    wait_for(
        lambda: "inbox 0, running 0, done 1, failed 1" in listener.statuses(),
        10,
        "the final status",
    )
    statuses = listener.statuses()
    assert any("running 1" in status for status in statuses)
