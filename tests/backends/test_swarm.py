"""The Swarm backend on this Engine's one-node swarm, with the stand-in worker image: what a
service looks like, a job waiting for a place, a task lost with its node.

The daemon, crash and containment tests also run on this backend (``on_both_backends``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.backends import expected_binds, job_binds, require_swarm
from tests.support.helpers import (
    StartDaemon,
    cli,
    cli_environ,
    exit_record,
    wait_finished,
    wait_for,
    write_job,
)
from watcherd.config.relay import DEFAULT_SOCKETS_DIR

pytestmark = pytest.mark.docker


@pytest.fixture
def backend(docker_client: docker.DockerClient) -> str:
    require_swarm(docker_client)
    return "swarm"


@pytest.fixture
def node(docker_client: docker.DockerClient) -> Iterator[Any]:
    """This Engine's node, put back as it was (active, no test labels) afterwards."""
    node = docker_client.nodes.get(docker_client.info()["Swarm"]["NodeID"])
    yield node
    node.reload()
    spec = node.attrs["Spec"]
    spec["Availability"] = "active"
    spec["Labels"] = {k: v for k, v in spec.get("Labels", {}).items() if "watcherd-test" not in k}
    node.update(spec)


def set_node(node: Any, **changes: Any) -> None:
    node.reload()
    node.update({**node.attrs["Spec"], **changes})


def services(client: docker.DockerClient, root: Path) -> list[Any]:
    return list(client.services.list(filters={"label": f"watcherd.root={root}"}))


def status(daemon: Any) -> dict[str, Any]:
    done = subprocess.run(
        cli(daemon, "status", "--json"), env=cli_environ(), capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_job_is_a_hardened_replicated_job_that_reserves_what_it_may_use(
    work_root: Path, start_daemon: StartDaemon, docker_client: docker.DockerClient, repo_url: str
) -> None:
    start_daemon(memory_limit="512m", pids_limit=64, cpus=0.5)
    write_job(work_root / "inbox", "inspect.yaml", repo_url=repo_url, prompt="hang",
              repo_dir="widgets")  # fmt: skip
    (service,) = wait_for(lambda: services(docker_client, work_root), 30, "a service")
    spec = service.attrs["Spec"]
    job_id = spec["Labels"]["watcherd.job"]
    assert spec["Name"] == f"watcherd-{job_id}"
    assert spec["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    task = spec["TaskTemplate"]
    assert task["RestartPolicy"]["Condition"] == "none"  # the daemon retries, not Swarm
    limits = {"NanoCPUs": 500_000_000, "MemoryBytes": 512 * 1024**2}
    assert task["Resources"]["Limits"] == {**limits, "Pids": 64}
    assert task["Resources"]["Reservations"] == limits  # placed only where it fits
    assert task["LogDriver"] == {
        "Name": "json-file", "Options": {"max-file": "2", "max-size": "10485760"},
    }  # fmt: skip
    assert "/var/run/docker.sock" not in str(service.attrs)
    container = wait_for(
        lambda: docker_client.containers.list(
            ignore_removed=True, filters={"label": f"watcherd.job={job_id}"}
        ),
        30, "its container running",
    )[0]  # fmt: skip
    host = container.attrs["HostConfig"]
    assert container.attrs["Config"]["User"] == "1000:1000"
    assert host["CapDrop"] == ["ALL"]
    assert host["ReadonlyRootfs"] is True
    assert host["Privileged"] is False
    assert host["Init"] is True
    assert (host["PidsLimit"], host["Memory"], host["NanoCpus"]) == (64, 512 * 1024**2, 5 * 10**8)
    assert job_binds(container) == expected_binds(work_root, job_id, "widgets", "swarm")
    assert (DEFAULT_SOCKETS_DIR / job_id).resolve() == work_root / "run" / job_id  # its own
    mounts = {m["Destination"]: m["Source"] for m in container.attrs["Mounts"]}
    assert {t for t, source in mounts.items() if not source} == {"/tmp", "/home/codex"}


def test_a_job_without_a_place_waits_with_the_reason_in_status_then_runs(
    work_root: Path, start_daemon: StartDaemon, node: Any, repo_url: str
) -> None:
    daemon = start_daemon(pools={"gpu": ["node.labels.watcherd-test-gpu==yes"]})
    # Its timeout is shorter than the wait: it starts when the job has a place.
    write_job(work_root / "inbox", "gpu.yaml", repo_url=repo_url, prompt="sleep 1",
              pool="gpu", timeout=3, retries=0)  # fmt: skip

    def waiting() -> str:
        running = status(daemon)["running"]
        return str(running[0]["waiting"] or "") if running else ""

    reason = wait_for(waiting, 30, "the placement reason in status")
    assert "no suitable node" in reason
    wait_for(lambda: "waiting for a place" in daemon.log(), 10, "the reason in the log")
    subprocess.run(["sleep", "4"], check=True)  # longer than its timeout, still waiting
    assert status(daemon)["running"][0]["waiting"]
    set_node(node, Labels={**node.attrs["Spec"].get("Labels", {}), "watcherd-test-gpu": "yes"})
    folder, path = wait_finished(work_root, "gpu.yaml", timeout=60)
    record = exit_record(work_root, path)
    assert (folder, record["state"], record["attempts"]) == ("done", "done", 1), record["reason"]


def test_a_task_killed_under_it_is_run_again_within_its_attempts(
    work_root: Path, start_daemon: StartDaemon, repo_url: str, docker_client: docker.DockerClient
) -> None:
    """What an Engine restart (or a node's loss) does to a task; the daemon retries it."""
    daemon = start_daemon()
    write_job(work_root / "inbox", "killed.yaml", repo_url=repo_url, prompt="count-and-sleep 30",
              retries=1, repo_dir="killed")  # fmt: skip
    label = {"label": f"watcherd.root={work_root}"}
    first = wait_for(
        lambda: docker_client.containers.list(ignore_removed=True, filters=label), 30, "a container"
    )[0]
    first.kill()
    second = wait_for(
        lambda: [
            c
            for c in docker_client.containers.list(ignore_removed=True, filters=label)
            if c.id != first.id
        ],
        30, "the second attempt running",
    )[0]  # fmt: skip
    second.kill()
    folder, path = wait_finished(work_root, "killed.yaml", timeout=60)
    record = exit_record(work_root, path)
    assert (folder, record["attempts"]) == ("failed", 2)
    assert "stopped from outside (worker killed by signal 9)" in record["reason"]
    assert "attempt 2 of 2" in daemon.log()
