"""The Swarm backend across two nodes (tests/support/swarmnodes.py: two more Engines in
network namespaces of their own): a job on the other node, its timeout there, and a node
that dies under its job. Slow (about a minute): `pytest -m slow` runs these too."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import (
    DaemonProcess,
    StartDaemon,
    exit_record,
    wait_finished,
    wait_for,
    write_job,
)
from tests.support.swarmnodes import TwoNodeSwarm

pytestmark = [pytest.mark.docker, pytest.mark.slow]
POOLS = {"elsewhere": ["node.labels.watcherd-test==target"]}


@pytest.fixture
def swarm(tmp_path: Path, behave: str) -> Iterator[TwoNodeSwarm]:
    nodes = TwoNodeSwarm(tmp_path / "swarm").start([behave])
    yield nodes
    nodes.close()


@pytest.fixture
def backend() -> str:
    return "swarm"


def on_the_swarm(start_daemon: StartDaemon, swarm: TwoNodeSwarm) -> DaemonProcess:
    return start_daemon(docker_host=swarm.manager.url, pools=POOLS, rescan_seconds=2)


def starts_on(swarm: TwoNodeSwarm, root: Path, since: float) -> dict[str, int]:
    """Container starts of this work root, per node, since ``since``."""
    counts = {}
    for node in (swarm.manager, swarm.worker):
        with_label = {"event": "start", "label": f"watcherd.root={root}"}
        try:
            events = node.client.events(since=int(since), until=int(time.time()) + 1,
                                        decode=True, filters=with_label)  # fmt: skip
            counts[node.name] = len(list(events))
        except Exception:  # a crashed node tells nothing
            counts[node.name] = -1
    return counts


def test_a_job_runs_on_the_node_its_pool_names_and_its_results_come_back(
    work_root: Path, start_daemon: StartDaemon, swarm: TwoNodeSwarm, repo_url: str
) -> None:
    began = time.time()
    swarm.label(swarm.worker, **{"watcherd-test": "target"})
    on_the_swarm(start_daemon, swarm)
    write_job(work_root / "inbox", "there.yaml", repo_url=repo_url, prompt="succeed",
              pool="elsewhere")  # fmt: skip
    folder, path = wait_finished(work_root, "there.yaml", timeout=60)
    record = exit_record(work_root, path)
    assert (folder, record["exit_code"], record["attempts"]) == ("done", 0, 1), record["reason"]
    assert record["agent_version"] == "behave"  # its out/ came back through the filesystem
    assert starts_on(swarm, work_root, began) == {"mgr": 0, "wrk": 1}


def test_a_job_times_out_on_another_node(
    work_root: Path, start_daemon: StartDaemon, swarm: TwoNodeSwarm, repo_url: str
) -> None:
    swarm.label(swarm.worker, **{"watcherd-test": "target"})
    on_the_swarm(start_daemon, swarm)
    write_job(work_root / "inbox", "slow.yaml", repo_url=repo_url, prompt="hang",
              pool="elsewhere", timeout=3)  # fmt: skip
    folder, path = wait_finished(work_root, "slow.yaml", timeout=60)
    record = exit_record(work_root, path)
    assert (folder, record["state"]) == ("failed", "timeout")
    label = {"label": f"watcherd.root={work_root}"}
    wait_for(lambda: not swarm.manager.client.services.list(filters=label), 30, "service gone")
    # Swarm stops the task when its service goes.
    wait_for(
        lambda: not swarm.worker.client.containers.list(ignore_removed=True, filters=label),
        30,
        "task stopped",
    )


def test_a_job_whose_node_dies_runs_again_on_another(
    work_root: Path, start_daemon: StartDaemon, swarm: TwoNodeSwarm, repo_url: str
) -> None:
    began = time.time()
    swarm.label(swarm.worker, **{"watcherd-test": "target"})
    daemon = on_the_swarm(start_daemon, swarm)
    write_job(work_root / "inbox", "doomed.yaml", repo_url=repo_url,
              prompt="count-and-sleep 6", pool="elsewhere", retries=1)  # fmt: skip
    label = {"label": f"watcherd.root={work_root}"}
    wait_for(
        lambda: swarm.worker.client.containers.list(ignore_removed=True, filters=label),
        60,
        "running there",
    )
    swarm.label(swarm.manager, **{"watcherd-test": "target"})  # room for a second attempt
    swarm.worker.crash()
    folder, path = wait_finished(work_root, "doomed.yaml", timeout=90)
    record = exit_record(work_root, path)
    assert (folder, record["attempts"]) == ("done", 2), record["reason"]
    assert starts_on(swarm, work_root, began)["mgr"] == 1
    starts = (work_root / "out" / path.name.removesuffix(".yaml") / "starts").read_text()
    assert starts.count("start") == 1 and starts.count("end") == 1  # a fresh out/, one run
    assert "attempt 1 failed (the container was lost: its node" in daemon.log()


def test_an_engine_restart_under_a_job_runs_it_again_once(
    work_root: Path, start_daemon: StartDaemon, swarm: TwoNodeSwarm, repo_url: str
) -> None:
    """The manager's Engine (the daemon's) stops mid-job and comes back: the daemon waits
    for it, finds the service again, and runs the job once more within its attempts."""
    swarm.label(swarm.manager, **{"watcherd-test": "target"})
    daemon = on_the_swarm(start_daemon, swarm)
    write_job(work_root / "inbox", "restart.yaml", repo_url=repo_url,
              prompt="count-and-sleep 4", pool="elsewhere", retries=1)  # fmt: skip
    label = {"label": f"watcherd.root={work_root}"}
    wait_for(
        lambda: swarm.manager.client.containers.list(ignore_removed=True, filters=label),
        60,
        "running",
    )
    swarm.manager.restart(swarm.base / "dockerd-mgr.log", down_for=3)
    folder, path = wait_finished(work_root, "restart.yaml", timeout=120)
    record = exit_record(work_root, path)
    assert folder == "done", record["reason"]
    assert "Docker Engine unavailable" in daemon.log() or "unreachable" in daemon.log()
    out = work_root / "out" / path.name.removesuffix(".yaml")
    starts = (out / "starts").read_text()
    assert (starts.count("start"), starts.count("end")) == (1, 1)  # a fresh out/, one run
    assert record["attempts"] == 2  # the killed run counted: not taken for a success
    assert "the container was lost" in daemon.log()
