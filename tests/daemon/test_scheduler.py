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


def test_login_jobs_share_a_login_and_are_spread_over_several() -> None:
    dirs = (Path("/l/one"), Path("/l/two"))
    scheduler = Scheduler(concurrency=5, logins={"codex": dirs})
    leases = [scheduler.acquire("codex") for _ in range(5)]
    assert all(lease is not None for lease in leases)
    used = [lease.auth_dir for lease in leases if lease is not None]
    assert used == [dirs[0], dirs[1], dirs[0], dirs[1], dirs[0]]  # the least used, in order
    assert scheduler.acquire("codex") is None  # only the concurrency limit holds them back
    first = leases[1]
    assert first is not None
    scheduler.release(first)  # /l/two now has one user, /l/one three
    again = scheduler.acquire("codex")
    assert again is not None and again.auth_dir == dirs[1]


def test_only_jobs_of_an_agent_with_a_login_take_one() -> None:
    scheduler = Scheduler(concurrency=4, logins={"codex": (Path("/l/one"),)})
    codex = scheduler.acquire("codex")
    assert codex is not None and codex.auth_dir == Path("/l/one")
    others = [scheduler.acquire(agent) for agent in ("opencode", "claude", "gemini")]
    assert all(lease is not None and lease.auth_dir is None for lease in others)
    assert scheduler.active == 4 and not scheduler.has_slot()  # the cap holds
    for lease in others:
        assert lease is not None
        scheduler.release(lease)
    assert scheduler.free_slots() == 3
    second = scheduler.acquire("codex")
    assert second is not None and second.auth_dir == Path("/l/one")  # shared


def test_jobs_without_logins_run_in_parallel() -> None:
    scheduler = Scheduler(concurrency=3)
    leases = [scheduler.acquire() for _ in range(3)]
    assert all(lease is not None and lease.auth_dir is None for lease in leases)


def test_adopted_containers_are_never_refused() -> None:
    scheduler = Scheduler(concurrency=1, logins={"codex": (Path("/l/one"), Path("/l/two"))})
    assert scheduler.acquire("codex") is not None
    adopted = scheduler.acquire("codex", force=True, auth_dir=Path("/l/two"))
    assert adopted is not None and adopted.auth_dir == Path("/l/two")
    assert scheduler.active == 2
    scheduler.release(adopted)
