"""Watching the daemon from outside: inotify on its folders, Docker's event stream.

Both record (wall-clock ns, what) as it happens, in a thread each, so that nothing is
added to the daemon. Docker keeps only its last 256 events, so the stream is consumed
live from before the daemon starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import select
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

_EVENT = struct.Struct("iIII")
_MASK = IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


@dataclass(frozen=True)
class FsEvent:
    t_ns: int
    folder: str  # relative to the watched root: "inbox", "out/<id>", ...
    mask: int
    cookie: int
    name: str

    @property
    def is_dir(self) -> bool:
        return bool(self.mask & IN_ISDIR)


class FolderWatch:
    """inotify on some folders of a work root; ``expand`` names folders in which a new
    subfolder is watched too (out/ → out/<id>/)."""

    def __init__(
        self,
        root: Path,
        folders: Iterable[str],
        expand: Iterable[str] = (),
        on_event: Callable[[FsEvent], None] | None = None,
    ) -> None:
        self.root = root
        self.events: list[FsEvent] = []
        self.overflowed = False
        self._on_event = on_event
        self._expand = set(expand)
        self._fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._folders: dict[int, str] = {}
        for folder in folders:
            self._add(folder)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="bench-inotify", daemon=True)
        self.lock = threading.Lock()

    def _add(self, folder: str) -> None:
        wd = _libc.inotify_add_watch(self._fd, os.fsencode(self.root / folder), _MASK)
        if wd < 0:
            code = ctypes.get_errno()
            if code == errno.ENOENT:
                return  # gone already (a removed out/<id>)
            raise OSError(code, f"inotify_add_watch {folder}")
        self._folders[wd] = folder

    def start(self) -> FolderWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)

    def snapshot(self) -> list[FsEvent]:
        with self.lock:
            return list(self.events)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            now = time.time_ns()
            offset = 0
            while offset < len(data):
                wd, mask, cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size
                name = data[offset : offset + length].rstrip(b"\0").decode("utf-8", "replace")
                offset += length
                if mask & IN_Q_OVERFLOW:
                    self.overflowed = True
                    continue
                folder = self._folders.get(wd)
                if folder is None:
                    continue
                event = FsEvent(now, folder, mask, cookie, name)
                if folder in self._expand and mask & IN_CREATE and mask & IN_ISDIR:
                    with contextlib.suppress(OSError):
                        self._add(f"{folder}/{name}")
                with self.lock:
                    self.events.append(event)
                if self._on_event is not None:
                    self._on_event(event)


@dataclass(frozen=True)
class DockerEvent:
    t_ns: int  # Docker's own timestamp (timeNano)
    received_ns: int
    action: str
    container: str
    job_id: str
    attributes: dict[str, str]


class DockerEvents:
    """Container events of one work root (label ``watcherd.root``), consumed live."""

    def __init__(self, client: docker.DockerClient, root: Path) -> None:
        self.events: list[DockerEvent] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self._stream: Any = client.events(
            decode=True,
            filters={"type": "container", "label": f"watcherd.root={root}"},
        )
        self._thread = threading.Thread(target=self._run, name="bench-docker-events", daemon=True)

    def start(self) -> DockerEvents:
        self._thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()
        self._thread.join(5)

    def snapshot(self) -> list[DockerEvent]:
        with self.lock:
            return list(self.events)

    def count(self, action: str) -> int:
        with self.lock:
            return sum(1 for e in self.events if e.action == action)

    def wait_count(self, action: str, count: int, timeout: float) -> bool:
        """Wait until ``count`` events of ``action`` have been seen; False on timeout."""
        with self.changed:
            return self.changed.wait_for(
                lambda: sum(1 for e in self.events if e.action == action) >= count, timeout
            )

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends with an error when closed
            for raw in self._stream:
                now = time.time_ns()
                actor = raw.get("Actor", {})
                attributes = dict(actor.get("Attributes", {}))
                event = DockerEvent(
                    t_ns=int(raw.get("timeNano", now)),
                    received_ns=now,
                    action=str(raw.get("Action", raw.get("status", ""))),
                    container=str(actor.get("ID", raw.get("id", ""))),
                    job_id=attributes.get("watcherd.job", ""),
                    attributes=attributes,
                )
                with self.changed:
                    self.events.append(event)
                    self.changed.notify_all()
