"""The ``mcp:`` section: settings of ``watcherd mcp`` (README "Using watcherd from another
agent"). The daemon never reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class McpSettings:
    read_only: bool = False  # offer no tool that submits (nor, later, cancels) a job


def parse_mcp_settings(value: Any) -> McpSettings:
    if value is None:
        return McpSettings()
    if not isinstance(value, dict):
        raise ValueError("expected a mapping such as {read_only: true}")
    unknown = sorted(str(key) for key in value if key != "read_only")
    if unknown:
        raise ValueError(f"unknown key(s): {', '.join(unknown)} (allowed: read_only)")
    read_only = value.get("read_only", False)
    if not isinstance(read_only, bool):
        raise ValueError(f"read_only: expected true or false, got {read_only!r}")
    return McpSettings(read_only=read_only)
