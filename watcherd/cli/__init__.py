"""The ``watcherd`` command: argument parsing and the views a person reads (show, wait, logs,
status, doctor)."""

from __future__ import annotations

from watcherd.cli.main import main

__all__ = ["main"]
