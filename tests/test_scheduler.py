from __future__ import annotations

from pathlib import Path

from watcherd.scheduler import Scheduler


def test_concurrency_and_one_job_per_repo() -> None:
    scheduler = Scheduler(concurrency=2)
    first = scheduler.acquire("a")
    assert first is not None
    assert scheduler.acquire("a") is None  # same clone waits
    second = scheduler.acquire("b")
    assert second is not None
    assert scheduler.acquire("c") is None  # limit reached
    scheduler.release("a", first)
    assert scheduler.acquire("a") is not None


def test_one_job_per_login_dir_but_a_pool_runs_in_parallel() -> None:
    dirs = (Path("/l/one"), Path("/l/two"))
    scheduler = Scheduler(concurrency=5, auth_dirs=dirs)
    a = scheduler.acquire("a")
    b = scheduler.acquire("b")
    assert a is not None and b is not None
    assert {a.auth_dir, b.auth_dir} == set(dirs)
    assert scheduler.acquire("c") is None  # both logins busy
    scheduler.release("a", a)
    c = scheduler.acquire("c")
    assert c is not None and c.auth_dir == a.auth_dir


def test_api_key_jobs_run_in_parallel() -> None:
    scheduler = Scheduler(concurrency=3, api_key="k")
    leases = [scheduler.acquire(name) for name in "abc"]
    assert all(lease is not None and lease.api_key == "k" for lease in leases)


def test_adopted_containers_are_never_refused() -> None:
    scheduler = Scheduler(concurrency=1)
    assert scheduler.acquire("a") is not None
    assert scheduler.acquire("a", force=True) is not None
    assert scheduler.active == 2
