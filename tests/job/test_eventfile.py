"""Reading a growing events.jsonl the agent writes: whole lines, safely, from the end."""

from __future__ import annotations

import json
import os
from pathlib import Path

from watcherd.job.eventfile import READ_BYTES, EventReader, read_all_events, read_tail_events


def line(n: int) -> bytes:
    return json.dumps({"type": "n", "n": n}).encode() + b"\n"


def test_whole_lines_only_from_where_the_last_read_stopped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    reader = EventReader(path)
    assert reader.read() == []  # no file yet
    path.write_bytes(line(1) + line(2)[:5])
    assert reader.read() == [{"type": "n", "n": 1}]
    with path.open("ab") as handle:
        handle.write(line(2)[5:] + b"not json\n" + b"[1, 2]\n" + line(3))
    assert [event["n"] for event in reader.read()] == [2, 3]
    assert reader.read() == []


def test_a_new_attempt_starts_a_new_file_and_the_reader_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(line(1) + line(2))
    reader = EventReader(path)
    assert len(reader.read()) == 2
    path.unlink()
    path.write_bytes(line(3))
    assert reader.read() == [{"type": "n", "n": 3}]
    assert reader.restarts == 1


def test_the_same_file_copied_elsewhere_is_read_on_not_again(tmp_path: Path) -> None:
    """out/<id>/ leaves the job's own filesystem for the root's once its container exited:
    the same events in a new file; and a new attempt's file as long is still new."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(line(1) + line(2))
    reader = EventReader(path)
    assert len(reader.read()) == 2
    copy = tmp_path / "copy"
    copy.write_bytes(path.read_bytes() + line(3))
    os.replace(copy, path)
    assert reader.read() == [{"type": "n", "n": 3}]
    assert reader.restarts == 0
    path.unlink()
    path.write_bytes(line(4) + line(5) + line(6) + line(7))
    assert [event["n"] for event in reader.read()] == [4, 5, 6, 7]
    assert reader.restarts == 1


def test_from_end_skips_what_was_already_there(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(line(1))
    reader = EventReader(path, from_end=True)
    assert reader.read() == []
    with path.open("ab") as handle:
        handle.write(line(2))
    assert reader.read() == [{"type": "n", "n": 2}]
    late = EventReader(tmp_path / "later.jsonl", from_end=True)  # not there yet: from 0
    (tmp_path / "later.jsonl").write_bytes(line(5))
    assert late.read() == []  # first sight of an existing file: its end


def test_a_line_longer_than_any_event_is_skipped_not_buffered(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"x": "' + b"a" * (READ_BYTES + 100) + b'"}\n' + line(7))
    assert read_all_events(path) == [{"type": "n", "n": 7}]


def test_links_and_fifos_are_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(line(1))
    os.symlink(secret, tmp_path / "link.jsonl")
    os.mkfifo(tmp_path / "fifo.jsonl")
    for name in ("link.jsonl", "fifo.jsonl"):
        assert EventReader(tmp_path / name).read() == []
        assert read_tail_events(tmp_path / name) is None


def test_the_tail_starts_at_a_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(line(n) for n in range(1000)))
    tail = read_tail_events(path, limit=100)
    assert tail is not None
    assert [event["n"] for event in tail.events] == [996, 997, 998, 999]
