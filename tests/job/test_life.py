"""A job's life against a recording Runner (no Docker): which Engine calls a job costs,
and that the attempt is durable before its container is made."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from bench.fakeserver import FakeRunner
from tests.support.backends import release_mounts
from tests.support.helpers import exit_record, finished_jobs, wait_for, write_job
from tests.util.test_loopfs import needs_loop
from watcherd.backends.base import Placement, TransientRunnerError
from watcherd.backends.spec import JOB_LABEL, ContainerSpec
from watcherd.config import load_config
from watcherd.daemon.server import Server
from watcherd.spool.folders import Layout, RunState, Spool, new_job_id
from watcherd.util import loopfs


class RecordingRunner(FakeRunner):
    """FakeRunner that notes every call, and what state/<id>.json said at each create."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.calls: list[tuple[str, str]] = []
        self.state_at_start: dict[str, dict[str, Any]] = {}

    def start(self, spec: ContainerSpec) -> str:
        job_id = spec.labels[JOB_LABEL]
        self.calls.append(("start", job_id))
        self.state_at_start[job_id] = json.loads(
            (self.root / "state" / f"{job_id}.json").read_text()
        )
        return super().start(spec)

    def find(self, job_id: str) -> str | None:
        self.calls.append(("find", job_id))
        return super().find(job_id)

    def remove(self, handle: str) -> None:
        self.calls.append(("remove", handle))
        super().remove(handle)

    def named(self, what: str) -> list[str]:
        return [arg for call, arg in self.calls if call == what]


def serve(tmp_path: Path, runner: RecordingRunner, **extra: Any) -> tuple[Server, threading.Thread]:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "root": str(runner.root),
                "image": "watcherd-test:none",
                "auth_mode": "none",
                "network_mode": "none",
                "allowed_protocols": ["file"],
                "settle_seconds": 0.1,
                "concurrency": 2,
                **extra,
            }
        )
    )
    server = Server(load_config(config_file), runner=runner)
    thread = threading.Thread(target=server.run, kwargs={"install_signal_handlers": False})
    thread.start()
    return server, thread


def test_a_fresh_claim_asks_no_find_and_its_attempt_is_durable_before_the_create(
    tmp_path: Path, repo_url: str
) -> None:
    root = tmp_path / "work"
    (root / "inbox").mkdir(parents=True)
    names = [f"j{n}.yaml" for n in range(4)]
    for name in names:
        write_job(root / "inbox", name, repo_url=repo_url, prompt="succeed")
    runner = RecordingRunner(root)
    server, thread = serve(tmp_path, runner)
    try:
        wait_for(lambda: len(finished_jobs(root)["done"]) == len(names), 60, "jobs done")
        # Removed behind the job, off its slot.
        wait_for(lambda: not runner.jobs(str(root)), 10, "containers removed")
    finally:
        server.stop()
        thread.join(30)
    started = runner.named("start")
    assert len(started) == len(names)
    assert runner.named("find") == []  # a fresh id: nothing to find, before or after
    assert sorted(runner.named("remove")) == sorted(f"fake-{job_id}" for job_id in started)
    for job_id, state in runner.state_at_start.items():
        # Counted, marked starting, with its commit: all on disk before the create.
        assert (state["attempts"], state["starting"]) == (1, True), job_id
        assert state["commit_before"] and state["deadline"]
    for job_file in (root / "done").iterdir():
        assert exit_record(root, job_file)["attempts"] == 1
    assert not list((root / "state").glob("*.json"))


class FailingRunner(RecordingRunner):
    """An Engine that answers every create with a 5xx."""

    def start(self, spec: ContainerSpec) -> str:
        self.calls.append(("start", spec.labels[JOB_LABEL]))
        raise TransientRunnerError("500 Server Error: the Engine is having a bad day")


def test_a_start_the_engine_keeps_refusing_uses_up_the_jobs_attempts(
    tmp_path: Path, repo_url: str
) -> None:
    # The Engine answered, so each refused start is an attempt: given back, as for a crash
    # between the count and the create, the job would be retried for ever.
    root = tmp_path / "work"
    (root / "inbox").mkdir(parents=True)
    write_job(root / "inbox", "refused.yaml", repo_url=repo_url, prompt="succeed", retries=1)
    runner = FailingRunner(root)
    server, thread = serve(tmp_path, runner, backoff_initial=0.05, backoff_max=0.1)
    try:
        wait_for(lambda: finished_jobs(root)["failed"], 60, "job filed")
    finally:
        server.stop()
        thread.join(30)
    record = exit_record(root, root / "failed" / finished_jobs(root)["failed"][0])
    assert record["attempts"] == 2 and "gave up after 2 attempt(s)" in record["reason"]
    assert len(runner.named("start")) == 2


def test_a_job_taken_over_from_running_is_looked_up_and_its_container_adopted(
    tmp_path: Path, repo_url: str
) -> None:
    root = tmp_path / "work"
    Layout(root).ensure()
    spool = Spool(Layout(root))
    job_id = new_job_id("adopt.yaml")
    write_job(root / "running", f"{job_id}.yaml", repo_url=repo_url, prompt="succeed")
    head = subprocess.run(
        ["git", "ls-remote", repo_url, "HEAD"], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    state = RunState(source_name="adopt.yaml", attempts=1, starting=True,
                     deadline=time.time() + 600, commit_before=head)  # fmt: skip
    spool.write_state(job_id, state)
    (root / "out" / job_id).mkdir()
    runner = RecordingRunner(root)
    # Its container, made by the daemon that died between the create and the next write.
    runner._by_job[job_id] = f"fake-{job_id}"
    server, thread = serve(tmp_path, runner)
    try:
        # Filed (failed: no fetch was made for it here, so its commit is unknown to the
        # results repository); what matters is that it was adopted, not run again.
        wait_for(lambda: finished_jobs(root)["failed"], 60, "job filed")
        wait_for(lambda: ("remove", f"fake-{job_id}") in runner.calls, 10, "container removed")
    finally:
        server.stop()
        thread.join(30)
    assert job_id in runner.named("find")
    assert runner.named("start") == []  # adopted, never made again
    record = exit_record(root, root / "failed" / f"{job_id}.yaml")
    assert record["attempts"] == 1


def test_a_filed_jobs_leftover_container_is_removed_at_the_next_start(tmp_path: Path) -> None:
    """A crash after the job was filed and before its container was removed (the cleanup
    thread's work): the next start removes it, and nothing runs again."""
    root = tmp_path / "work"
    Layout(root).ensure()
    job_id = new_job_id("filed.yaml")
    (root / "done" / f"{job_id}.yaml").write_text("prompt: succeed\n")
    runner = RecordingRunner(root)
    runner._by_job[job_id] = f"fake-{job_id}"  # exited (FakeRunner.inspect)
    server, thread = serve(tmp_path, runner)
    try:
        wait_for(lambda: ("remove", f"fake-{job_id}") in runner.calls, 10, "leftover removed")
    finally:
        server.stop()
        thread.join(30)
    assert runner.named("start") == []
    assert list((root / "done").iterdir()) == [root / "done" / f"{job_id}.yaml"]


class HostRunner(RecordingRunner):
    """Sees the daemon's mounts, as the Engine on this host does; its tasks may be placed
    ``elsewhere`` (a Swarm node other than the daemon's)."""

    def __init__(self, root: Path, elsewhere: str = "") -> None:
        super().__init__(root)
        self.elsewhere = elsewhere
        self.placements: list[tuple[str, ...]] = []

    def read_mounted(self, folder: Path, name: str, image: str) -> bytes | None:
        return (folder / name).read_bytes()

    def placement(self, constraints: tuple[str, ...]) -> Placement:
        if self.elsewhere:
            return Placement(constraints, self.elsewhere)
        return Placement((*constraints, "node.id==here"))

    def start(self, spec: ContainerSpec) -> str:
        self.placements.append(spec.placement)
        return super().start(spec)


def run_one(
    tmp_path: Path, runner: RecordingRunner, repo_url: str, **extra: Any
) -> tuple[Path, list[Path]]:
    """One job through the daemon; its job file, and what was still mounted after it."""
    root = runner.root
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    write_job(root / "inbox", "one.yaml", repo_url=repo_url, prompt="succeed", disk="32m")
    server, thread = serve(tmp_path, runner, keep_workspaces=0, **extra)
    try:
        done = wait_for(lambda: [*(root / "done").glob("*"), *(root / "failed").glob("*")],
                        60, "the job filed")  # fmt: skip
        wait_for(lambda: not list((root / "disks").glob("*.img")), 10, "its image pruned")
        left = [mount.target for mount in loopfs.mounts_below(root)]
    finally:
        server.stop()
        thread.join(30)
        release_mounts(root)
    return done[0], left


@needs_loop
def test_a_jobs_budget_is_its_filesystem_kept_where_it_is(tmp_path: Path, repo_url: str) -> None:
    runner = HostRunner(tmp_path / "work")
    job_file, left = run_one(tmp_path, runner, repo_url)
    record = exit_record(runner.root, job_file)
    assert record["state"] == "done", record["reason"]
    assert record["disk"]["bound"] == "filesystem" and record["disk"]["budget"] == 32 * 2**20
    assert runner.placements == [("node.id==here",)]  # kept on the filesystem's host
    assert runner.state_at_start[job_file.stem]["disk_bound"] == "filesystem"
    assert left == []  # released with its pruned workspace


@needs_loop
def test_a_job_whose_task_may_run_on_another_node_is_polled_and_says_why(
    tmp_path: Path, repo_url: str
) -> None:
    runner = HostRunner(tmp_path / "work", elsewhere="node-2")
    record = exit_record(runner.root, run_one(tmp_path, runner, repo_url)[0])
    assert record["state"] == "done", record["reason"]
    assert record["disk"]["bound"] == "poll"
    assert "may run on node node-2" in record["disk"]["why"]
    assert runner.placements == [()]  # placed as its pool says, nothing added


@needs_loop
def test_with_disk_bound_require_such_a_job_fails_rather_than_being_polled(
    tmp_path: Path, repo_url: str
) -> None:
    runner = HostRunner(tmp_path / "work", elsewhere="node-2")
    job_file, _ = run_one(tmp_path, runner, repo_url, disk_bound="require")
    record = exit_record(runner.root, job_file)
    assert (job_file.parent.name, record["state"]) == ("failed", "failed")
    assert "disk_bound is require, and its task may run on node node-2" in record["reason"]


def test_with_disk_bound_require_a_daemon_that_cannot_make_filesystems_does_not_start(
    tmp_path: Path,
) -> None:
    runner = RecordingRunner(tmp_path / "work")  # no Engine to show its view: polled
    server, thread = serve(tmp_path, runner, disk_bound="require")
    thread.join(30)
    assert not thread.is_alive() and server.exit_code == 1
    assert not server.ready.is_set()


@needs_loop
def test_pruning_never_releases_the_filesystem_of_a_job_claimed_meanwhile(
    tmp_path: Path, repo_url: str
) -> None:
    """Jobs back to back at concurrency 2, nothing kept: each filed job prunes while the
    next is being made; none loses its filesystem to it."""
    runner = HostRunner(tmp_path / "work")
    root = runner.root
    (root / "inbox").mkdir(parents=True)
    names = [f"j{n:03d}.yaml" for n in range(60)]
    for name in names:
        write_job(root / "inbox", name, repo_url=repo_url, prompt="succeed", disk="16m")
    server, thread = serve(tmp_path, runner, keep_workspaces=0)
    try:
        wait_for(lambda: len(finished_jobs(root)["done"]) + len(finished_jobs(root)["failed"])
                 == len(names), 120, "every job filed")  # fmt: skip
    finally:
        server.stop()
        thread.join(30)
        release_mounts(root)
    failed = finished_jobs(root)["failed"]
    assert failed == [], exit_record(root, root / "failed" / failed[0])["reason"]
