"""Job ids: ``20261126T210000Z-fix-tests-1a2b3c``, the UTC time of the claim, the stem of
the dropped name and 6 random hex digits. Sortable by time, unique, and safe as a file
name, a container name and a path segment."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from watcherd.spool.filters import job_stem

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# What new_job_id makes, matched whole: it starts with a digit and has no '/', so a string
# that passes is one file name in one folder, never a path.
_JOB_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9._-]{1,40}-[0-9a-f]{6}")
JOB_ID_EXAMPLE = "20261126T210000Z-fix-1a2b3c"


def new_job_id(file_name: str, now: datetime | None = None) -> str:
    """``20261126T210000Z-fix-tests-1a2b3c``: sortable, unique, safe as a file and
    container name."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    stem = _UNSAFE.sub("-", job_stem(file_name)).strip("-.")[:40].strip("-.") or "job"
    return f"{stamp}-{stem}-{secrets.token_hex(3)}"


def is_job_id(text: str) -> bool:
    """A job id as new_job_id makes them (``20261126T210000Z-fix-1a2b3c``)."""
    return _JOB_ID.fullmatch(text) is not None
