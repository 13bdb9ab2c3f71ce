"""A unix socket at any path: the kernel takes at most 107 bytes of path, and a job's run
folder under a deep work root can be longer, so the socket is bound through a descriptor of
its folder (``/proc/self/fd/N/name``), which names the same place in a few bytes."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

MAX_SUN_PATH = 107


def bind_unix(path: Path, mode: int = 0o666) -> socket.socket:
    """A listening-ready socket bound at ``path`` (an old socket there is replaced), with
    ``mode``: the container's user connects, and the folder decides who can reach it."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(path)) <= MAX_SUN_PATH:
            sock.bind(str(path))
        else:
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                sock.bind(f"/proc/self/fd/{folder}/{path.name}")
            finally:
                os.close(folder)
        os.chmod(path, mode)
    except BaseException:
        sock.close()
        raise
    return sock
