"""A stand-in for systemd's notify socket: an AF_UNIX datagram socket the test owns."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Datagram:
    received_at: float  # time.monotonic() in the test process
    text: str

    @property
    def fields(self) -> dict[str, str]:
        return dict(line.partition("=")[::2] for line in self.text.split("\n"))


class NotifySocket:
    """Binds a path (or an abstract name) and keeps reading in a thread, as systemd does:
    the kernel queues only a few datagrams (net.unix.max_dgram_qlen), and a sender facing
    a full queue blocks, which would slow down the daemon under test."""

    def __init__(self, path: Path | None = None, abstract_name: str | None = None) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract_name is not None:
            self._sock.bind("\0" + abstract_name)
            self.address = "@" + abstract_name
        else:
            assert path is not None
            self._sock.bind(str(path))
            self.address = str(path)
        self._sock.settimeout(0.05)  # how often the reader looks whether it should stop
        self._received: list[Datagram] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            with self._lock:
                self._received.append(Datagram(time.monotonic(), data.decode()))

    def datagrams(self, since: float = 0.0) -> list[Datagram]:
        with self._lock:
            return [d for d in self._received if d.received_at >= since]

    def texts(self, since: float = 0.0) -> list[str]:
        return [d.text for d in self.datagrams(since)]

    def pings(self, since: float = 0.0) -> list[Datagram]:
        return [d for d in self.datagrams(since) if "WATCHDOG" in d.fields]

    def statuses(self, since: float = 0.0) -> list[str]:
        return [d.fields["STATUS"] for d in self.datagrams(since) if "STATUS" in d.fields]

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def environ(self, watchdog_usec: int | None = None) -> dict[str, str]:
        """The variables systemd sets for a Type=notify service (with WatchdogSec=)."""
        environ = {"NOTIFY_SOCKET": self.address}
        if watchdog_usec is not None:
            environ["WATCHDOG_USEC"] = str(watchdog_usec)
        return environ


def unique_abstract_name() -> str:
    return f"watcherd-test-{os.getpid()}-{os.urandom(4).hex()}"
