"""The daemon's publisher: a job filed asking to be published gets a request and
``publish: pending`` at once, the thread does it and tells (job.published); ``watcherd
publish`` asks the same way and prints the outcome; a request a crash left is done at the
next start; two publishers on one root publish once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helpers import cli_environ, wait_for
from tests.support.publishing import REPO, World, finished_job, make_world
from watcherd.client.jobview import describe, view_job
from watcherd.config import Config
from watcherd.config.publish import FORGE_TYPES
from watcherd.publish import Publisher, request_publish, wait_for_outcome
from watcherd.publish.forges import FORGES
from watcherd.publish.requests import listed
from watcherd.spool.folders import Claimed, Layout
from watcherd.spool.lookup import resolve


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = make_world(tmp_path)
    yield made
    made.close()


def record(config: Config, job_id: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((config.root / "out" / job_id / "exit.json").read_text())
    return loaded


def claimed(config: Config, job_id: str) -> Claimed:
    data = (config.root / "done" / f"{job_id}.yaml").read_bytes()
    path = config.root / "done" / f"{job_id}.yaml"
    return Claimed(job_id=job_id, path=path, fd=-1, data=data, source_name="fix.yaml")


def test_every_forge_type_the_config_takes_is_registered() -> None:
    assert set(FORGE_TYPES) == set(FORGES)


def test_a_filed_job_that_asks_is_published_and_told(world: World) -> None:
    config = world.config()
    job_id = finished_job(world, config, commits=[{"README.md": "# widgets\n"}],
                          publish="draft")  # fmt: skip
    told: list[tuple[str, bytes | None]] = []
    publisher = Publisher(lambda: config, lambda c, j, data: told.append((j, data)), poll=0.05)
    after: list[str] = []
    hook = publisher.chained(lambda job, _config: after.append(job.job_id))
    hook(claimed(config, job_id), config)  # before the thread runs: only asked for
    assert after == [job_id]
    assert record(config, job_id)["publish"]["state"] == "pending"
    assert record(config, job_id)["publish"]["as"] == "draft"
    assert len(listed(config.root)) == 1
    publisher.start()
    try:
        wait_for(lambda: record(config, job_id)["publish"]["state"] != "pending", 30, "publish")
    finally:
        publisher.close(5)
    outcome = record(config, job_id)
    assert outcome["state"] == "done"  # the job's own state is untouched
    assert outcome["publish"]["state"] == "published" and outcome["publish"]["by"] == "job"
    assert told and told[0][0] == job_id and told[0][1] is not None
    assert listed(config.root) == []
    # show prints it
    view = view_job(Layout(config.root), config, resolve(Layout(config.root), job_id))  # type: ignore[arg-type]
    assert any(line.startswith("publish:    published (draft): https://forge.test/")
               for line in describe(view))  # fmt: skip


def test_a_job_that_does_not_ask_makes_no_request(world: World) -> None:
    config = world.config()
    job_id = finished_job(world, config, commits=[{"a": "1"}])
    publisher = Publisher(lambda: config)
    publisher.job_finished(claimed(config, job_id), config)
    assert listed(config.root) == [] and "publish" not in record(config, job_id)


def test_a_repository_default_asks_for_the_job(world: World) -> None:
    config = world.config(repos=[{"match": "http://127.0.0.1:*/acme/*", "publish": "ready"}])
    job_id = finished_job(world, config, commits=[{"a": "1"}])
    Publisher(lambda: config).job_finished(claimed(config, job_id), config)
    assert record(config, job_id)["publish"] == {
        **record(config, job_id)["publish"], "state": "pending", "as": "ready"}  # fmt: skip


def test_a_request_left_by_a_crash_is_done_at_the_next_start(world: World) -> None:
    config = world.config()
    job_id = finished_job(world, config, commits=[{"a": "1"}])
    request = request_publish(config, job_id, "ready")
    publisher = Publisher(lambda: config, poll=0.05)
    publisher.start()
    try:
        outcome = wait_for_outcome(config.root, job_id, request.nonce, 30)
    finally:
        publisher.close(5)
    assert outcome is not None and outcome["state"] == "published" and outcome["draft"] is False


def test_two_publishers_on_one_root_publish_once(world: World) -> None:
    config = world.config()
    jobs = [finished_job(world, config, f"j{n}.yaml", commits=[{"a": str(n)}]) for n in range(3)]
    requests = [request_publish(config, job_id, "draft") for job_id in jobs]
    publishers = [Publisher(lambda: config, poll=0.02) for _ in range(2)]
    for publisher in publishers:
        publisher.start()
    try:
        for job_id, request in zip(jobs, requests, strict=True):
            assert wait_for_outcome(config.root, job_id, request.nonce, 60) is not None
    finally:
        for publisher in publishers:
            publisher.close(5)
    assert len(world.api.pulls[REPO]) == 3
    assert world.git.pushes == 3


def test_the_cli_asks_the_daemon_and_prints_the_outcome(world: World, tmp_path: Path) -> None:
    data = world.config_data()
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(data))
    config = world.config()
    job_id = finished_job(world, config, "fix-42.yaml", commits=[{"a": "1"}])
    publisher = Publisher(lambda: config, poll=0.05)
    publisher.start()
    try:
        run = subprocess.run(
            [sys.executable, "-m", "watcherd", "--config", str(path), "publish", "fix-42",
             "--as", "ready", "--timeout", "60"],
            capture_output=True, text=True, env=cli_environ(), timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        outcome = json.loads(run.stdout)
        assert outcome["state"] == "published" and outcome["by"] == "cli"
        assert "published: https://forge.test/acme/widgets/pull/1" in run.stderr
        show = subprocess.run(
            [sys.executable, "-m", "watcherd", "--config", str(path), "show", "fix-42"],
            capture_output=True, text=True, env=cli_environ(),
        )  # fmt: skip
        assert "publish:    published (ready): https://forge.test/" in show.stdout
        # Again: nothing new pushed, the same pull request.
        again = subprocess.run(
            [sys.executable, "-m", "watcherd", "--config", str(path), "publish", job_id],
            capture_output=True, text=True, env=cli_environ(), timeout=120,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["url"] == outcome["url"]
        assert world.git.pushes == 1 and len(world.api.pulls[REPO]) == 1
    finally:
        publisher.close(5)
    # No daemon: the CLI says so after its timeout.
    slow = subprocess.run(
        [sys.executable, "-m", "watcherd", "--config", str(path), "publish", job_id,
         "--timeout", "0.5"],
        capture_output=True, text=True, env=cli_environ(), timeout=60,
    )  # fmt: skip
    assert slow.returncode == 124 and "is the daemon running" in slow.stderr


def test_the_cli_refuses_a_running_or_unknown_job(world: World, tmp_path: Path) -> None:
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(world.config_data()))
    run = subprocess.run([sys.executable, "-m", "watcherd", "--config", str(path), "publish",
                          "nope"], capture_output=True, text=True, env=cli_environ())  # fmt: skip
    assert run.returncode == 5 and "no job 'nope'" in run.stderr


def test_a_stopping_publisher_leaves_the_request_for_the_next_start(world: World) -> None:
    config = world.config(retries=3)
    job_id = finished_job(world, config, commits=[{"a": "1"}])
    world.api.queue("GET", "/repos/acme/widgets", 503, {"message": "down"}, times=50)
    request = request_publish(config, job_id, "draft")
    publisher = Publisher(lambda: config, poll=0.02)
    publisher.start()
    wait_for(lambda: any(s.method == "GET" for s in world.api.seen), 30, "a first try")
    stopping = threading.Thread(target=publisher.close, args=(10,))
    stopping.start()
    stopping.join(15)
    assert not stopping.is_alive()
    assert "publish" not in record(config, job_id)
    assert len(listed(config.root)) == 1  # the request stays
    world.api.script.clear()
    again = Publisher(lambda: config, poll=0.02)
    again.start()
    try:
        outcome = wait_for_outcome(config.root, job_id, request.nonce, 30)
    finally:
        again.close(5)
    assert outcome is not None and outcome["state"] == "published"
    assert world.git.pushes == 1
