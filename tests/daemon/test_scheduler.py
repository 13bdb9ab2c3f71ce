from __future__ import annotations

from pathlib import Path

from watcherd.daemon.scheduler import Scheduler


def test_concurrency_limit_and_jobs_on_one_repository_are_not_serialized() -> None:
    scheduler = Scheduler(concurrency=2)
    first = scheduler.acquire()
    second = scheduler.acquire()
    assert first is not None and second is not None
    assert scheduler.acquire() is None  # limit reached
    scheduler.release(first)
    assert scheduler.acquire() is not None


def test_one_job_per_login_dir_but_a_pool_runs_in_parallel() -> None:
    dirs = (Path("/l/one"), Path("/l/two"))
    scheduler = Scheduler(concurrency=5, logins={"codex": dirs})
    a = scheduler.acquire("codex")
    b = scheduler.acquire("codex")
    assert a is not None and b is not None
    assert {a.auth_dir, b.auth_dir} == set(dirs)
    assert not scheduler.has_slot("codex")  # both logins busy
    assert scheduler.busy_logins() == {"codex"}
    assert scheduler.acquire("codex") is None
    scheduler.release(a)
    c = scheduler.acquire("codex")
    assert c is not None and c.auth_dir == a.auth_dir


def test_only_jobs_of_an_agent_with_a_login_take_one() -> None:
    scheduler = Scheduler(concurrency=4, logins={"codex": (Path("/l/one"),)})
    codex = scheduler.acquire("codex")
    assert codex is not None and codex.auth_dir == Path("/l/one")
    others = [scheduler.acquire(agent) for agent in ("opencode", "claude", "gemini")]
    assert all(lease is not None and lease.auth_dir is None for lease in others)
    assert scheduler.active == 4 and not scheduler.has_slot("opencode")  # the cap holds
    for lease in others:
        assert lease is not None
        scheduler.release(lease)
    assert scheduler.has_slot("opencode") and not scheduler.has_slot("codex")
    assert scheduler.free_slots() == 3  # a busy login does not shrink the others' slots


def test_jobs_without_logins_run_in_parallel() -> None:
    scheduler = Scheduler(concurrency=3)
    leases = [scheduler.acquire() for _ in range(3)]
    assert all(lease is not None and lease.auth_dir is None for lease in leases)


def test_adopted_containers_are_never_refused() -> None:
    scheduler = Scheduler(concurrency=1, logins={"codex": (Path("/l/one"),)})
    assert scheduler.acquire("codex") is not None
    adopted = scheduler.acquire("codex", force=True, auth_dir=Path("/l/one"))
    assert adopted is not None and adopted.auth_dir == Path("/l/one")
    assert scheduler.active == 2
