from __future__ import annotations

import pytest

from watcherd.util.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90), ("90", 90), ("30s", 30), ("30m", 1800), ("2h", 7200), ("1.5h", 5400)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["soon", -1, 0, True, None, "1y", float("inf"), float("nan"), "9" * 400]
)
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_sizes() -> None:
    assert parse_size("512m") == 512 * 1024**2
    assert parse_size("4GiB") == 4 * 1024**3
    assert parse_size(1000) == 1000
    with pytest.raises(ValueError):
        parse_size("lots")
