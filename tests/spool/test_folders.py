"""Claims are atomic and exclusive: threads and processes racing on one inbox."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcherd.spool.folders import Layout, NotRetryable, RunState, Spool, is_job_id, new_job_id
from watcherd.util.fsutil import rename_noreplace


def make_spool(root: Path) -> Spool:
    layout = Layout(root)
    layout.ensure()
    return Spool(layout)


def test_rename_noreplace_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with pytest.raises(FileExistsError):
        rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "b"
    assert (tmp_path / "a").read_text() == "a"


def test_claim_moves_locks_and_keeps_bytes(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    (spool.layout.inbox / "fix.yaml").write_bytes(b"prompt: x\n")
    job = spool.claim("fix.yaml")
    assert job is not None
    assert job.data == b"prompt: x\n"
    assert job.path.parent == spool.layout.running
    assert not (spool.layout.inbox / "fix.yaml").exists()
    assert list(spool.orphans()) == []  # we hold its lock: not an orphan
    target = spool.finish(job, ok=False)
    assert target.read_bytes() == b"prompt: x\n"
    assert target.parent == spool.layout.failed


def test_same_name_twice_gives_two_jobs(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    ids = set()
    for _ in range(2):
        (spool.layout.inbox / "fix.yaml").write_text("x")
        job = spool.claim("fix.yaml")
        assert job is not None
        ids.add(job.job_id)
    assert len(ids) == 2


def test_orphan_after_owner_releases(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    (spool.layout.inbox / "a.yaml").write_text("x")
    job = spool.claim("a.yaml")
    assert job is not None
    job.release()  # as if its daemon died
    orphans = list(spool.orphans())
    assert [o.job_id for o in orphans] == [job.job_id]
    assert orphans[0].data == b"x"


def test_specials_are_rejected_without_following(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    os.symlink("/etc/passwd", spool.layout.inbox / "link.yaml")
    os.mkfifo(spool.layout.inbox / "pipe.yaml")
    entries = {e.name: e for e in spool.scan_inbox()}
    assert entries["link.yaml"].kind == "symlink"
    assert entries["pipe.yaml"].kind == "fifo"
    assert spool.claim("link.yaml") is None
    assert spool.claim("pipe.yaml") is None  # never blocks on the fifo
    for entry in entries.values():
        assert spool.reject_special(entry)
    failed = sorted(spool.layout.failed.iterdir())
    assert len(failed) == 2
    assert any(p.is_symlink() and os.readlink(p) == "/etc/passwd" for p in failed)


def test_scan_order_is_fifo_by_mtime_then_name(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    for name, mtime in (("b.yaml", 100), ("a.yaml", 200), ("c.yaml", 100)):
        path = spool.layout.inbox / name
        path.write_text("x")
        os.utime(path, (mtime, mtime))
    assert [e.name for e in spool.scan_inbox()] == ["b.yaml", "c.yaml", "a.yaml"]


def _claim_all(root: str, names: list[str], results: multiprocessing.Queue[str]) -> None:
    spool = Spool(Layout(Path(root)))
    for name in names:
        job = spool.claim(name)
        if job is not None:
            results.put(job.data.decode())
            job.release()


def test_processes_racing_claim_each_file_once(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    names = [f"job{i:03d}.yaml" for i in range(200)]
    for name in names:
        (spool.layout.inbox / name).write_text(name)
    results: multiprocessing.Queue[str] = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_claim_all, args=(str(tmp_path), order, results))
        for order in (names, names[::-1], names[::2] + names[1::2], names[100:] + names[:100])
    ]
    for proc in procs:
        proc.start()
    claimed = [results.get(timeout=30) for _ in names]
    for proc in procs:
        proc.join(30)
    assert sorted(claimed) == names
    assert results.empty()
    assert len(list(spool.layout.running.iterdir())) == len(names)


@settings(max_examples=25, deadline=None)
@given(count=st.integers(1, 20), threads=st.integers(2, 6))
def test_threads_racing_claim_each_file_once(
    tmp_path_factory: pytest.TempPathFactory, count: int, threads: int
) -> None:
    root = tmp_path_factory.mktemp("race")
    spool = make_spool(root)
    names = [f"j{i}.yaml" for i in range(count)]
    for name in names:
        (spool.layout.inbox / name).write_text(name)
    claimed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def claim() -> None:
        barrier.wait()
        for name in names:
            job = spool.claim(name)
            if job is not None:
                with lock:
                    claimed.append(job.data.decode())

    workers = [threading.Thread(target=claim) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(claimed) == sorted(names)


@given(st.text(min_size=0, max_size=200))
def test_job_ids_are_safe(name: str) -> None:
    job_id = new_job_id(name)
    assert is_job_id(job_id)  # so retry takes every id the daemon gives
    assert job_id.replace("-", "").replace(".", "").replace("_", "").isalnum()
    assert not job_id.startswith(("-", "."))
    assert len(job_id) <= 70


FAILED_ID = "20261126T210000Z-fix-1a2b3c"


def test_requeue_puts_a_failed_job_back_under_a_new_name(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    (spool.layout.failed / f"{FAILED_ID}.yaml").write_bytes(b"prompt: x\n")
    target = spool.requeue(FAILED_ID)
    assert target.parent == spool.layout.inbox
    assert target.name.startswith("fix-retry-") and target.read_bytes() == b"prompt: x\n"
    assert not (spool.layout.failed / f"{FAILED_ID}.yaml").exists()
    with pytest.raises(NotRetryable, match=f"no failed job {FAILED_ID} in "):
        spool.requeue(FAILED_ID)  # once only


@pytest.mark.parametrize(
    "job_id",
    [f"../done/{FAILED_ID}", "../../outside", str(Path("/tmp") / FAILED_ID), f".{FAILED_ID}",
     f"{FAILED_ID}/..", f"{FAILED_ID}.yaml", "", "..", "nope"],
)  # fmt: skip
def test_requeue_takes_an_id_never_a_path(tmp_path: Path, job_id: str) -> None:
    spool = make_spool(tmp_path / "root")
    (spool.layout.done / f"{FAILED_ID}.yaml").write_text("x")
    (tmp_path / "outside.yaml").write_text("x")
    with pytest.raises(NotRetryable, match="is not a job id"):
        spool.requeue(job_id)
    assert list(spool.layout.inbox.iterdir()) == []


@pytest.mark.parametrize("state", ["done", "running"])
def test_requeue_refuses_a_job_that_did_not_fail(tmp_path: Path, state: str) -> None:
    spool = make_spool(tmp_path)
    (tmp_path / state / f"{FAILED_ID}.yaml").write_text("x")
    with pytest.raises(NotRetryable, match=f"job {FAILED_ID} is {state}, not failed"):
        spool.requeue(FAILED_ID)
    assert (tmp_path / state / f"{FAILED_ID}.yaml").exists()


def test_requeue_refuses_what_was_never_a_job_file(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    os.symlink("/etc/passwd", spool.layout.failed / f"{FAILED_ID}.yaml")
    with pytest.raises(NotRetryable, match="is a symlink, not a job file"):
        spool.requeue(FAILED_ID)
    assert list(spool.layout.inbox.iterdir()) == []


def test_stale_state_files_are_dropped_and_live_ones_kept(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.ensure()
    spool = Spool(layout)
    for job_id in ("running-job", "done-job", "never-claimed", "just-claimed"):
        spool.write_state(job_id, RunState(source_name=f"{job_id}.yaml"))
    (layout.running / "running-job.yaml").write_text("x")
    (layout.done / "done-job.yaml").write_text("x")
    half = layout.state / ".cut.json.1234abcd.tmp"
    half.write_text("{")
    old = time.time() - 120
    for path in (layout.state / "never-claimed.json", layout.state / "running-job.json", half):
        os.utime(path, (old, old))
    spool.drop_stale_states(older_than=60)
    assert sorted(p.name for p in layout.state.iterdir()) == [
        "just-claimed.json",
        "running-job.json",
    ]
