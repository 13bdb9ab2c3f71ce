"""Which names in the inbox are jobs. Small pure functions, like watchfiles' filters."""

from __future__ import annotations

JOB_SUFFIXES = (".yaml", ".yml")
# Editors and careful writers put these next to the file they are writing.
IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".swp", "~")


def is_in_progress(name: str) -> bool:
    """A name a writer uses while the file is not complete yet."""
    return name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES)


def is_job_name(name: str) -> bool:
    """A finished job file's name: ``*.yaml`` or ``*.yml`` and not in progress."""
    return not is_in_progress(name) and name.lower().endswith(JOB_SUFFIXES)


def job_stem(name: str) -> str:
    """``fix-tests.yaml`` → ``fix-tests``."""
    lower = name.lower()
    for suffix in JOB_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name
