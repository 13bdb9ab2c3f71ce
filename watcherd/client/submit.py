"""Dropping a job into the inbox: checked as the daemon will check it, then written under a
dot-name and renamed in, so the daemon never sees half a file. The CLI's ``submit``, the HTTP
API and the MCP server all come through here."""

from __future__ import annotations

from pathlib import Path

from watcherd.config import Config
from watcherd.job.spec import InvalidJob, JobSpec, parse_job
from watcherd.spool.drop import drop
from watcherd.spool.filters import is_job_name
from watcherd.spool.folders import Layout


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
    return drop(inbox, name, data), spec


def os_problem(exc: OSError) -> str:
    """'no such file' rather than "[Errno 2] No such file or directory: '...'"."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a job file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (exc.strerror or str(exc)).lower()


__all__ = ["BadName", "InvalidJob", "inbox_name", "is_plain_name", "os_problem", "submit"]
