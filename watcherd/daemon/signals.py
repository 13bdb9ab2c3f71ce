"""Signals, handled in one place and never inside a signal handler.

CPython runs a signal handler on the main thread between two bytecodes, which may be
while that thread holds the lock inside ``Event.wait()`` or ``Event.clear()``: calling
``Event.set()`` from the handler would then deadlock the daemon. So the handlers here do
nothing; ``signal.set_wakeup_fd`` has the interpreter write each signal's number to a
pipe, and a small thread reads the pipe and runs the action (set a flag, wake the main
loop) outside any handler. The main loop then does the actual work (shut down, reload).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType

log = logging.getLogger("watcherd.signals")

SignalAction = Callable[[signal.Signals], None]


class SignalRelay:
    def __init__(self, actions: Mapping[signal.Signals, SignalAction]) -> None:
        self._actions = {int(signum): action for signum, action in actions.items()}

    def install(self) -> None:
        """Take over the signals. Main thread only (CPython's rule for signal handlers)."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # set_wakeup_fd requires it: a handler never blocks
        for signum in self._actions:
            signal.signal(signum, _wake_relay_only)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(
            target=self._relay, args=(read_fd,), name="signal-relay", daemon=True
        ).start()

    def _relay(self, read_fd: int) -> None:
        while True:
            received = os.read(read_fd, 64)
            if not received:
                return
            for signum in received:
                action = self._actions.get(signum)
                if action is None:
                    continue
                try:
                    action(signal.Signals(signum))
                except Exception:  # the relay must outlive a failing action
                    log.exception("handling %s failed", signal.Signals(signum).name)


def _wake_relay_only(signum: int, frame: FrameType | None) -> None:
    """Installing a Python handler is what makes CPython write to the wakeup fd."""
