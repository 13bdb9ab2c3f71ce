"""Dropping a job into the inbox: checked as the daemon will check it, then written under a
dot-name and renamed in, so the daemon never sees half a file. The CLI's ``submit``, the HTTP
API and the MCP server all come through here."""

from __future__ import annotations

from watcherd.config import Config
from watcherd.job.spec import InvalidJob, JobSpec, parse_job
from watcherd.spool.drop import Dropped, drop
from watcherd.spool.filters import is_job_name
from watcherd.spool.folders import Layout

# Bytes of a name: with the suffix a taken name gets and the temporary file's dot and tail,
# still within a file system's 255.
MAX_NAME_BYTES = 200


class BadName(ValueError):
    """A job name with a path, a NUL, a leading dot or a control character in it, or too
    long for a file name."""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file name in the inbox, or None when it can."""
    if not name or "/" in name or "\0" in name or name.startswith("."):
        return (
            "give a plain file name, without '/' and not starting with '.' "
            "(the daemon never claims those)"
        )
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "has control characters in it (a newline, a tab, ...)"
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes long; at most {MAX_NAME_BYTES}"
    return None


def is_plain_name(name: str) -> bool:
    """A file name the inbox may hold: no path, no NUL, not a dot-name (never claimed), no
    control character, not too long."""
    return name_problem(name) is None


def inbox_name(name: str) -> str:
    """``fix-42`` -> ``fix-42.yaml``; a name the daemon claims already stays as it is."""
    problem = name_problem(name)
    if problem is not None:
        shown = name if len(name) <= 60 else f"{name[:60]}..."
        raise BadName(f"name {shown!r}: {problem}")
    return name if is_job_name(name) else f"{name}.yaml"


def submit(config: Config, name: str, data: bytes) -> tuple[Dropped, JobSpec]:
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


__all__ = [
    "BadName", "InvalidJob", "inbox_name", "is_plain_name", "name_problem", "os_problem", "submit",
]  # fmt: skip
