"""Red team of the Swarm backend: a hostile job file, a hostile agent and the lifecycle of
a service on this Engine's one-node swarm. A task "on another node" is one the runner
is told runs elsewhere (its node id changed), so that its calls go through Swarm only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tests.support.backends import require_swarm
from tests.support.helpers import StartDaemon, exit_record, wait_finished, write_job

pytestmark = pytest.mark.docker


@pytest.fixture
def backend(docker_client: docker.DockerClient) -> str:
    require_swarm(docker_client)
    return "swarm"


def services(client: docker.DockerClient, root: Path) -> list[Any]:
    return list(client.services.list(filters={"label": f"watcherd.root={root}"}))


# -- a hostile job file ----------------------------------------------------------------


def test_a_job_whose_cpus_round_to_nothing_is_refused_not_run_uncapped_and_unreserved(
    work_root: Path, start_daemon: StartDaemon, docker_client: docker.DockerClient, repo_url: str
) -> None:
    """`cpus: 1e-10` passes `0 < cpus <= config.cpus` and becomes 0 nano-CPUs, which Swarm
    reads as no CPU limit and no reservation: the job ran uncapped on a node already full."""
    start_daemon(cpus=0.5)
    write_job(work_root / "inbox", "greedy.yaml", repo_url=repo_url, prompt="succeed",
              cpus=1e-10, retries=0)  # fmt: skip
    folder, path = wait_finished(work_root, "greedy.yaml", timeout=60)
    record = exit_record(work_root, path)
    assert folder == "failed", record
    assert "could not start the container" in record["reason"]
    assert "0.001 CPUs" in record["reason"]
    assert not services(docker_client, work_root)
