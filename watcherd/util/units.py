"""Human-friendly quantities used by job files and the config: durations and sizes."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``90``, ``30s``, ``30m``, ``2h``.

    Raises ValueError with a message meant for the person who wrote the value.
    """
    if isinstance(value, bool):
        raise ValueError("expected seconds or a duration like '30m', got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"expected seconds or a duration like '30m' or '2h', got {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    else:
        raise ValueError(f"expected seconds or a duration like '30m', got {type(value).__name__}")
    # YAML's .inf and .nan, or 400 digits: NaN passes every comparison with a limit.
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"must be more than zero, got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from a number or a string like ``512m`` or ``4GiB``."""
    if isinstance(value, bool):
        raise ValueError("expected a size like '4g', got a boolean")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"expected a size like '512m' or '4g', got {value!r}")
        unit = (match.group(2) or "").lower().rstrip("b").rstrip("i")
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    else:
        raise ValueError(f"expected a size like '4g', got {type(value).__name__}")
    if size <= 0:
        raise ValueError(f"must be more than zero, got {value!r}")
    return size
