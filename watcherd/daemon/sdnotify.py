"""Tell systemd how the daemon is doing: ready, reloading, stopping, alive, and a status line.

A ``Type=notify`` service finds the address of systemd's datagram socket in
``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket); each message is one
datagram of ``KEY=VALUE`` lines (sd_notify(3)). That is a few lines of socket code, so
there is no libsystemd or python-systemd dependency. Without ``NOTIFY_SOCKET`` (not under
systemd) every call does nothing, so the daemon needs no special mode.

The watchdog (``WatchdogSec=`` in the unit) is fed by ``tick``, which only the daemon's
main loop calls: a ping then means "the loop is still turning", so a stalled loop stops
the pings and systemd restarts the service. A ping from a helper thread would keep a
dead loop looking alive. A ``Notifier`` is therefore used from the main thread only.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger("watcherd.sdnotify")

# Pings per WatchdogSec: one slow turn of the main loop is not yet a missed watchdog.
PINGS_PER_INTERVAL = 3
# systemd drains its socket at once; a wedged PID 1 must not hang our main loop for long.
SEND_TIMEOUT_SECONDS = 1.0


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """``WATCHDOG_USEC`` in seconds, or None when there is no watchdog for this process.

    systemd sets ``WATCHDOG_PID`` to the main process; a child that inherited the
    variables must not feed the watchdog on the daemon's behalf.
    """
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid and watchdog_pid != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


class Notifier:
    """sd_notify over ``NOTIFY_SOCKET``, plus the watchdog's timing."""

    def __init__(
        self,
        address: str | None,
        watchdog_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._address = _socket_address(address) if address else None
        # No socket, no one to ping: a watchdog without NOTIFY_SOCKET means nothing.
        self.watchdog_seconds = watchdog_seconds if self._address is not None else None
        self._clock = clock
        self._socket: socket.socket | None = None
        self._last_ping: float | None = None
        self._last_status: str | None = None

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] = os.environ, pid: int | None = None
    ) -> Notifier:
        return cls(
            environ.get("NOTIFY_SOCKET") or None,
            watchdog_interval(environ, os.getpid() if pid is None else pid),
        )

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def ping_every(self) -> float | None:
        """Seconds between watchdog pings, or None without a watchdog."""
        if self.watchdog_seconds is None:
            return None
        return self.watchdog_seconds / PINGS_PER_INTERVAL

    # -- state changes -----------------------------------------------------------------

    def ready(self, status: str | None = None) -> None:
        """Start-up (or a reload) is complete."""
        self._send("READY=1", *self._status_lines(status))

    def reloading(self) -> None:
        """A reload starts; ``ready`` ends it. MONOTONIC_USEC is what systemd >= 253 wants
        for Type=notify-reload; older versions ignore it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> None:
        self._send("STOPPING=1", *self._status_lines(status))

    def status(self, text: str) -> None:
        """The one-line status ``systemctl status`` shows; sent only when it changed."""
        self._send(*self._status_lines(text))

    # -- the main loop's heartbeat -----------------------------------------------------

    def tick(self, status: str) -> None:
        """Call on every turn of the main loop (and only there): pings the watchdog when a
        ping is due and updates the status when it changed, in one datagram."""
        lines = self._status_lines(status)
        if self.watchdog_due_in() == 0.0:
            lines.insert(0, "WATCHDOG=1")
            self._last_ping = self._clock()
        self._send(*lines)

    def watchdog_due_in(self) -> float | None:
        """Seconds until the next ping is due (0.0: now), or None without a watchdog.
        The main loop waits at most this long, so an idle daemon keeps pinging."""
        every = self.ping_every
        if every is None:
            return None
        if self._last_ping is None:
            return 0.0
        return max(0.0, self._last_ping + every - self._clock())

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # -- the socket --------------------------------------------------------------------

    def _status_lines(self, status: str | None) -> list[str]:
        if status is None or status == self._last_status:
            return []
        self._last_status = status
        return [f"STATUS={_one_line(status)}"]

    def _send(self, *lines: str) -> None:
        if self._address is None or not lines:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.settimeout(SEND_TIMEOUT_SECONDS)
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            # Not fatal: systemd may be restarting. A missed READY or watchdog ping shows
            # up in systemd's own log; this says why.
            log.warning("could not notify systemd (%s): %s", lines[0], exc)


def _socket_address(address: str) -> str | None:
    """NOTIFY_SOCKET as a socket address: ``@name`` is Linux's abstract namespace."""
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    # sd_notify(3) accepts nothing else over AF_UNIX either (newer systemd also speaks
    # vsock, for VMs; a daemon on a host never gets such an address).
    log.warning("NOTIFY_SOCKET=%r is not an absolute path or @name; not notifying systemd",
                address)  # fmt: skip
    return None


def _one_line(text: str) -> str:
    """A status is one line: a newline would start a new KEY=VALUE assignment."""
    return " ".join(text.split("\n"))


@dataclass
class QueueCounts:
    """What STATUS= shows: jobs in the inbox and running now, done and failed since start.

    The daemon fills it from what it already knows (its last inbox scan, its own job
    table, the outcomes its job threads report), never by scanning folders per ping.
    """

    inbox: int = 0
    running: int = 0
    prepared: int = 0  # claimed and made ready, waiting for a slot
    done: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def finished(self, ok: bool) -> None:
        """A job reached done/ or failed/ (called from job threads too)."""
        with self._lock:
            if ok:
                self.done += 1
            else:
                self.failed += 1

    def status_text(self) -> str:
        prepared = f", prepared {self.prepared}" if self.prepared else ""
        return (f"inbox {self.inbox}, running {self.running}{prepared}, done {self.done}, "
                f"failed {self.failed}")  # fmt: skip
