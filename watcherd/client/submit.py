"""Dropping a job into the inbox: checked as the daemon will check it, then written under a
dot-name and renamed in, so the daemon never sees half a file. The CLI's ``submit``, the HTTP
API and the MCP server all come through here."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from watcherd.config import Config
from watcherd.job.spec import InvalidJob, JobSpec, parse_job
from watcherd.spool.filters import is_job_name
from watcherd.spool.folders import Layout
from watcherd.util.fsutil import fsync_dir, rename_noreplace


class BadName(ValueError):
    """A job name with a path, a NUL, or a leading dot in it."""


def is_plain_name(name: str) -> bool:
    """A file name the inbox may hold: no path, no NUL, not a dot-name (never claimed)."""
    return bool(name) and "/" not in name and "\0" not in name and not name.startswith(".")


def inbox_name(name: str) -> str:
    """``fix-42`` -> ``fix-42.yaml``; a name the daemon claims already stays as it is."""
    if not is_plain_name(name):
        raise BadName(
            f"name {name!r}: give a plain file name, without '/' and not starting with '.' "
            "(the daemon never claims those)"
        )
    return name if is_job_name(name) else f"{name}.yaml"


def submit(config: Config, name: str, data: bytes) -> tuple[Path, JobSpec]:
    """Check ``data`` as a job file and drop it into the inbox as ``name`` (a suffix is added
    if that name is taken). Raises BadName, InvalidJob (with the reason) or OSError."""
    name = inbox_name(name)
    spec = parse_job(data, config)
    inbox = Layout(config.root).inbox
    inbox.mkdir(parents=True, exist_ok=True)
    return submit_bytes(inbox, name, data), spec


def submit_bytes(inbox: Path, name: str, data: bytes) -> Path:
    """Write under a dot-name the daemon ignores, then rename in: it never sees half a file.
    A name already taken gets a suffix rather than replacing another job."""
    tmp = inbox / f".{name}.{secrets.token_hex(4)}.tmp"
    with tmp.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    target = inbox / name
    for _ in range(100):
        try:
            rename_noreplace(tmp, target)
            break
        except FileExistsError:
            stem, dot, suffix = name.rpartition(".")
            target = inbox / f"{stem}-{secrets.token_hex(3)}{dot}{suffix}"
    else:  # pragma: no cover - 100 random collisions
        tmp.unlink()
        raise FileExistsError(target)
    fsync_dir(inbox)
    return target


__all__ = ["BadName", "InvalidJob", "inbox_name", "is_plain_name", "submit", "submit_bytes"]
