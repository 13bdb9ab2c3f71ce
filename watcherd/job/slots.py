"""What a job holds to run (a Lease of a slot), and where a prepared job waits for one."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Lease:
    """What a job holds while it runs, handed out by the scheduler."""

    auth_dir: Path | None = None


class StartGate:
    """A prepared job's container is made and not started: its thread waits here until the
    main loop, which alone counts slots, opens the gate with a slot's lease."""

    def __init__(self) -> None:
        self._opened = threading.Event()
        self.lease: Lease | None = None

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()

    def open(self, lease: Lease) -> None:
        self.lease = lease
        self._opened.set()

    def wait(self, timeout: float) -> bool:
        """True once open; False after ``timeout`` seconds shut."""
        return self._opened.wait(timeout)
