"""Retry policy as data: what is transient, how long to back off, when to give up."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import tenacity

# The worker image exits with 75 (EX_TEMPFAIL) when a failure is worth retrying,
# such as a network failure while cloning.
TRANSIENT_EXIT_CODES = frozenset({75})


class TransientFailure(Exception):
    """This attempt failed in a way another attempt may not."""


@dataclass(frozen=True)
class Backoff:
    initial: float
    maximum: float

    def retrying(
        self,
        *,
        retry_on: type[BaseException],
        give_up: Callable[[], bool],
        stop_event: threading.Event,
        on_retry: Callable[[BaseException, float], None] | None = None,
    ) -> tenacity.Retrying:
        """Exponential backoff with jitter, interrupted by ``stop_event``.

        ``give_up`` is asked before each new attempt: the attempt count lives on
        disk with the job, so a restarted daemon does not start counting again.
        """
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(retry_on),
            stop=tenacity.stop_any(
                tenacity.stop_when_event_set(stop_event),
                _StopWhen(give_up),
            ),
            wait=tenacity.wait_exponential_jitter(
                multiplier=self.initial, max=self.maximum, jitter=self.initial
            ),
            sleep=lambda seconds: _interruptible_sleep(stop_event, seconds),
            before_sleep=_reporter(on_retry),
            reraise=True,
        )

    def wait_for(
        self,
        action: Callable[[], object],
        *,
        retry_on: type[BaseException],
        stop_event: threading.Event,
        on_retry: Callable[[BaseException, float], None] | None = None,
    ) -> bool:
        """Call ``action`` until it stops raising ``retry_on``, backing off in between.
        False if ``stop_event`` ended the wait first."""

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            if on_retry is not None and error is not None and state.next_action is not None:
                on_retry(error, state.next_action.sleep)

        retrying = self.retrying(retry_on=retry_on, give_up=lambda: False, stop_event=stop_event)
        retrying.before_sleep = before_sleep
        try:
            for attempt in retrying:
                with attempt:
                    action()
        except retry_on:
            return False
        return True


class _StopWhen(tenacity.stop.stop_base):
    def __init__(self, predicate: Callable[[], bool]) -> None:
        self._predicate = predicate

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._predicate()


def _interruptible_sleep(stop_event: threading.Event, seconds: float) -> None:
    stop_event.wait(seconds)


def _reporter(
    on_retry: Callable[[BaseException, float], None] | None,
) -> Callable[[tenacity.RetryCallState], None] | None:
    """tenacity's before-sleep hook, as (the failure, the pause before the next attempt)."""
    if on_retry is None:
        return None

    def report(state: tenacity.RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        if failure is not None:
            on_retry(failure, state.upcoming_sleep)

    return report
