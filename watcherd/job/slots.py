"""What a job holds to run (a Lease of a slot), and the gate through which its thread and
the main loop, which alone counts slots, pass a slot between them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Lease:
    """What a job holds while it runs, handed out by the scheduler."""

    auth_dir: Path | None = None


class StartGate:
    """A job's container starts only through an open gate. The main loop opens it with a
    slot; the job's thread waits at it while it is shut (a job prepared ahead of a free
    slot, or an attempt retried after its slot went back), and shuts it when its container
    has exited, so that the slot serves the next job while this one is collected and filed
    (``concurrency`` counts containers running)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake  # the main loop's: a slot to give or to take back
        self._opened = threading.Event()
        self.ever_opened = False  # False: prepared ahead, never started
        self.waiting = False  # its thread waits for a slot now

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()

    def open(self) -> None:
        """The main loop gives it a slot."""
        self.waiting = False
        self.ever_opened = True
        self._opened.set()

    def wait(self, timeout: float) -> bool:
        """The job's thread: True once open; False after ``timeout`` seconds shut."""
        if not self.waiting and not self.is_open:
            self.waiting = True
            self._wake()
        return self._opened.wait(timeout)

    def hand_back(self) -> None:
        """The job's thread: its container has exited, its slot goes back."""
        self._opened.clear()
        self._wake()
