"""NAME or ID to a job: queued names, reused names, ids, claims that never happened."""

from __future__ import annotations

import os
from pathlib import Path

from watcherd.spool.folders import Layout, Spool
from watcherd.spool.lookup import JobRef, Place, find_claim, name_candidates, resolve


def make_spool(root: Path) -> Spool:
    layout = Layout(root)
    layout.ensure()
    return Spool(layout)


def drop_and_claim(spool: Spool, name: str) -> str:
    (spool.layout.inbox / name).write_text("prompt: x\n")
    job = spool.claim(name)
    assert job is not None
    spool.finish(job, ok=True)
    return job.job_id


def test_name_candidates() -> None:
    assert name_candidates("fix-42") == ["fix-42.yaml", "fix-42.yml"]
    assert name_candidates("fix-42.yaml") == ["fix-42.yaml"]
    assert name_candidates("Fix.YML") == ["Fix.YML"]
    for path in ("../x", "a/b.yaml", ".hidden", ""):
        assert name_candidates(path) == []


def test_a_name_in_the_inbox_is_queued(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    (spool.layout.inbox / "fix-42.yaml").write_text("x")
    inode = (spool.layout.inbox / "fix-42.yaml").stat().st_ino
    expected = JobRef(Place.QUEUED, None, "fix-42.yaml", inode)
    assert resolve(spool.layout, "fix-42") == expected
    assert resolve(spool.layout, "fix-42.yaml") == expected


def test_a_reused_name_resolves_to_the_latest_and_the_first_by_its_id(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    first = drop_and_claim(spool, "fix-42.yaml")
    second = drop_and_claim(spool, "fix-42.yaml")
    assert resolve(spool.layout, "fix-42") == JobRef(Place.DONE, second, "fix-42.yaml")
    found = resolve(spool.layout, first)
    assert found is not None and (found.job_id, found.place) == (first, Place.DONE)
    assert resolve(spool.layout, f"{first}.yaml") == found
    # Dropped a third time: the name means the queued one until it is claimed.
    (spool.layout.inbox / "fix-42.yaml").write_text("x")
    queued = resolve(spool.layout, "fix-42")
    assert queued is not None and queued.place is Place.QUEUED


def test_a_claim_is_found_by_the_inode_it_had_in_the_inbox(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    earlier = drop_and_claim(spool, "fix-42.yaml")
    (spool.layout.inbox / "fix-42.yaml").write_text("x")
    inode = (spool.layout.inbox / "fix-42.yaml").stat().st_ino
    assert find_claim(spool.layout, "fix-42.yaml", inode) is None
    job = spool.claim("fix-42.yaml")
    assert job is not None
    assert find_claim(spool.layout, "fix-42.yaml", inode) == job.job_id != earlier
    assert resolve(spool.layout, "fix-42") == JobRef(Place.RUNNING, job.job_id, "fix-42.yaml")


def test_an_id_whose_claim_never_happened_is_skipped(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    done = drop_and_claim(spool, "fix-42.yaml")
    # A daemon died after indexing its claim and before the move.
    spool.names.record("fix-42.yaml", "20991231T000000Z-fix-42-abcdef")
    assert resolve(spool.layout, "fix-42") == JobRef(Place.DONE, done, "fix-42.yaml")
    assert resolve(spool.layout, "20991231T000000Z-fix-42-abcdef") is None


def test_unknown_names_and_ids(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    for query in ("nothing", "20261126T210000Z-fix-1a2b3c", "../inbox/x", "/etc/passwd"):
        assert resolve(spool.layout, query) is None


def test_a_refused_symlink_is_found_as_failed(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    os.symlink("/etc/passwd", spool.layout.inbox / "link.yaml")
    (entry,) = spool.scan_inbox()
    job_id = spool.reject_special(entry)
    assert resolve(spool.layout, "link") == JobRef(Place.FAILED, job_id, "link.yaml")
