"""Servers inside a container's network namespace, for tests that prove nothing else is reached.

A container started with ``network_mode="none"`` has a namespace with only a loopback; a
socket created in it (here: by a thread that joined it with setns(2), which needs root) is
the only thing any container sharing that namespace (``network_mode="container:ID"``) can
reach. ``DnsRecorder`` answers every DNS query there with NXDOMAIN and records the name, so
a test sees each host a program tried to find. Test-only.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def in_netns(pid: int, make: Callable[[], T]) -> T:
    """Run ``make`` on a thread that joined the network namespace of process ``pid``: the
    sockets it creates belong to that namespace (threads it starts inherit it too)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def join_and_make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            result.append(make())
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=join_and_make, daemon=True)
    thread.start()
    thread.join(timeout=30)
    if errors:
        raise errors[0]
    if not result:
        raise RuntimeError("joining the network namespace timed out")
    return result[0]


class DnsRecorder:
    """A DNS server on 127.0.0.1:53 (UDP) that records each name asked and answers NXDOMAIN."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 53))
        self._sock.settimeout(0.5)
        self._stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                packet, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            question = _question(packet)
            if question is None:
                continue
            name, end = question
            self.names.append(name)
            # The header with QR and RA set and RCODE 3 (NXDOMAIN), RD copied, the question
            # echoed back (without any additional record the query had).
            flags = 0x8083 | (struct.unpack("!H", packet[2:4])[0] & 0x0100)
            answer = packet[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + packet[12:end]
            self._sock.sendto(answer, peer)

    def stop(self) -> None:
        self._stopped.set()
        self._sock.close()


def _question(packet: bytes) -> tuple[str, int] | None:
    """The name of a query's first question and where that question ends."""
    if len(packet) < 17:
        return None
    labels, at = [], 12
    while at < len(packet) and packet[at] != 0:
        length = packet[at]
        labels.append(packet[at + 1 : at + 1 + length].decode(errors="replace"))
        at += 1 + length
    end = at + 1 + 4  # the root label, then QTYPE and QCLASS
    return (".".join(labels), end) if end <= len(packet) else None
