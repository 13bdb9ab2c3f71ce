"""Making out/<id>/ safe to read, once its container has exited.

The agent runs as the same user as the worker that writes out/<id>/, so it can leave
anything there. Before the daemon or a person reads it:

- everything that is not a regular file or a folder goes (symlinks, fifos, sockets), and
  so does whatever sits where a known file belongs without being a regular file (a
  folder named exit.json);
- anything named ``.git`` or ``HEAD`` goes: git takes a folder for a repository only
  through a ``.git`` or a ``HEAD`` in it, so git run anywhere in out/ never reads a
  config the agent wrote (core.fsmonitor runs a command);
- no file or folder keeps a setuid, setgid or sticky bit, or group or world write: a
  setuid copy of a shell would let any local user act as the job's user.

Nothing is followed. What was removed is listed in exit.json.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from watcherd.util.fsutil import remove_tree

KNOWN_FILES = (
    "exit.json", "summary.md", "run.log", "events.jsonl", "last-message.md",
    "changes.patch", "branch.bundle",
)  # fmt: skip


GIT_MARKERS = (".git", "HEAD")
_UNSAFE_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH


def make_safe(out_dir: Path) -> list[str]:
    """Remove what must not be there; return it, as paths relative to ``out_dir``."""
    removed: list[str] = []
    _drop_unsafe_bits(str(out_dir), os.lstat(out_dir).st_mode)
    for name in KNOWN_FILES:
        path = out_dir / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(mode):
            remove_tree(path)
            removed.append(f"{name} ({_kind(mode)})")
    for dirpath, dirnames, filenames in os.walk(out_dir, followlinks=False):
        for name in (*dirnames, *filenames):
            entry = os.path.join(dirpath, name)
            try:
                mode = os.lstat(entry).st_mode
            except FileNotFoundError:
                continue
            if name in GIT_MARKERS or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                remove_tree(Path(entry))
                removed.append(f"{os.path.relpath(entry, out_dir)} ({_kind(mode)})")
            else:
                _drop_unsafe_bits(entry, mode)
        dirnames[:] = [d for d in dirnames if os.path.isdir(os.path.join(dirpath, d))]
    return removed


def _drop_unsafe_bits(path: str, mode: int) -> None:
    if mode & _UNSAFE_BITS:
        os.chmod(path, stat.S_IMODE(mode) & ~_UNSAFE_BITS)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISREG, "file"),
    ):
        if test(mode):
            return name
    return "device"


def keep_only_known(out_dir: Path) -> list[str]:
    """Remove everything but the known files (a job over its disk budget gives its space
    back); return what went."""
    removed = []
    for entry in sorted(os.listdir(out_dir)):
        if entry not in KNOWN_FILES:
            remove_tree(out_dir / entry)
            removed.append(f"{entry} (over the disk budget)")
    return removed
