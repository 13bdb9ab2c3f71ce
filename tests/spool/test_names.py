"""The index of dropped names: appended at claim time, read from its tail, crash-safe."""

from __future__ import annotations

import os
from pathlib import Path

from watcherd.spool.folders import Layout, Spool, new_job_id
from watcherd.spool.names import TAIL_BYTES, NameIndex

A = "20261126T210000Z-fix-42-aaaaaa"
B = "20261126T220000Z-fix-42-bbbbbb"


def make_spool(root: Path) -> Spool:
    layout = Layout(root)
    layout.ensure()
    return Spool(layout)


def test_ids_are_kept_in_order_newest_last(tmp_path: Path) -> None:
    index = NameIndex(tmp_path)
    assert index.ids("fix-42.yaml") == []
    index.record("fix-42.yaml", A)
    index.record("fix-42.yaml", B)
    assert index.ids("fix-42.yaml") == [A, B]
    assert (tmp_path / "fix-42.yaml").read_text() == f"{A}\n{B}\n"


def test_a_line_cut_by_a_crash_is_skipped_and_the_next_id_kept(tmp_path: Path) -> None:
    index = NameIndex(tmp_path)
    index.record("fix-42.yaml", A)
    with (tmp_path / "fix-42.yaml").open("a") as handle:
        handle.write(B[:12])  # the daemon died in the middle of an append
    assert index.ids("fix-42.yaml") == [A]
    index.record("fix-42.yaml", B)
    assert index.ids("fix-42.yaml") == [A, B]


def test_only_the_tail_is_read_however_often_a_name_was_used(tmp_path: Path) -> None:
    index = NameIndex(tmp_path)
    ids = [new_job_id("job.yaml") for _ in range(500)]
    with (tmp_path / "job.yaml").open("w") as handle:
        handle.write("".join(f"{job_id}\n" for job_id in ids))
    found = index.ids("job.yaml")
    assert found == ids[-len(found) :]
    assert len(found) * (len(ids[0]) + 1) <= TAIL_BYTES
    assert len(found) > 50


def test_names_that_are_paths_or_links_find_nothing(tmp_path: Path) -> None:
    index = NameIndex(tmp_path / "index")
    (tmp_path / "index").mkdir()
    (tmp_path / "outside.yaml").write_text(f"{A}\n")
    os.symlink(tmp_path / "outside.yaml", tmp_path / "index" / "link.yaml")
    for name in ("../outside.yaml", "link.yaml", "", ".", ".."):
        assert index.ids(name) == [], name


def test_a_claim_and_a_refused_special_are_indexed_under_the_dropped_name(
    tmp_path: Path,
) -> None:
    spool = make_spool(tmp_path)
    (spool.layout.inbox / "fix-42.yaml").write_text("x")
    job = spool.claim("fix-42.yaml")
    assert job is not None
    assert spool.names.ids("fix-42.yaml") == [job.job_id]
    os.symlink("/etc/passwd", spool.layout.inbox / "fix-42.yaml")
    (special,) = [e for e in spool.scan_inbox() if not e.is_regular]
    rejected = spool.reject_special(special)
    assert spool.names.ids("fix-42.yaml") == [job.job_id, rejected]
    assert (spool.layout.index / "fix-42.yaml").stat().st_mode & 0o777 == 0o644


def test_a_root_without_an_index_folder_gets_one_at_the_first_claim(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    spool.layout.index.rmdir()  # laid out by an older watcherd
    (spool.layout.inbox / "old.yaml").write_text("x")
    job = spool.claim("old.yaml")
    assert job is not None
    assert spool.names.ids("old.yaml") == [job.job_id]
