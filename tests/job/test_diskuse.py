from __future__ import annotations

import os
from pathlib import Path

from watcherd.job.diskuse import tree_bytes


def test_counts_allocated_blocks_below_every_path_without_following_links(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "deep" / "er").mkdir(parents=True)
    b.mkdir()
    (a / "deep" / "er" / "one").write_bytes(os.urandom(64 * 1024))
    (b / "two").write_bytes(os.urandom(64 * 1024))
    os.symlink("/usr", a / "link")  # must not count /usr
    with (b / "sparse").open("wb") as handle:  # allocated, not apparent, size counts
        handle.truncate(1024**3)
    total = tree_bytes([a, b, tmp_path / "missing"], limit=1024**3)
    assert 128 * 1024 <= total < 1024**2


def test_stops_early_once_past_the_limit(tmp_path: Path) -> None:
    for n in range(50):
        (tmp_path / f"d{n}").mkdir()
        (tmp_path / f"d{n}" / "f").write_bytes(b"x" * 8192)
    assert tree_bytes([tmp_path], limit=10) > 10
