from __future__ import annotations

import threading

from watcherd.util.retry import Backoff


class Flaky(Exception):
    pass


def test_wait_for_retries_until_the_action_succeeds() -> None:
    calls: list[int] = []
    reported: list[float] = []

    def action() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise Flaky

    ok = Backoff(0.001, 0.002).wait_for(
        action, retry_on=Flaky, stop_event=threading.Event(),
        on_retry=lambda exc, delay: reported.append(delay),
    )  # fmt: skip
    assert ok
    assert len(calls) == 3
    assert len(reported) == 2 and all(0 <= d <= 0.003 for d in reported)


def test_wait_for_gives_up_when_stopped() -> None:
    stop = threading.Event()

    def action() -> None:
        stop.set()
        raise Flaky

    assert not Backoff(0.001, 0.002).wait_for(action, retry_on=Flaky, stop_event=stop)


def test_retrying_reports_each_failure_before_the_next_attempt() -> None:
    reported: list[tuple[str, float]] = []
    attempts = 0
    retrying = Backoff(0.001, 0.002).retrying(
        retry_on=Flaky, give_up=lambda: attempts >= 3, stop_event=threading.Event(),
        on_retry=lambda exc, pause: reported.append((str(exc), pause)),
    )  # fmt: skip
    try:
        for attempt in retrying:
            with attempt:
                attempts += 1
                raise Flaky(f"try {attempts}")
    except Flaky as exc:
        assert str(exc) == "try 3"  # the last failure is the caller's, not reported
    assert [text for text, _ in reported] == ["try 1", "try 2"]
    assert all(0 <= pause <= 0.003 for _, pause in reported)
