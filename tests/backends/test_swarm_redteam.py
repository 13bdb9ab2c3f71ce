"""Red team of the Swarm backend: a hostile job file, a hostile agent and the lifecycle of
a service on this Engine's one-node swarm. A task "on another node" is one the runner
is told runs elsewhere (its node id changed), so that its calls go through Swarm only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tests.support.backends import require_swarm
from tests.support.helpers import StartDaemon, exit_record, wait_finished, wait_for, write_job
from watcherd.backends.swarm import SwarmRunner

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


# -- credentials -------------------------------------------------------------------------


def test_a_removed_idle_secret_is_made_again_for_the_next_job(
    work_root: Path, start_daemon: StartDaemon, docker_client: docker.DockerClient,
    repo_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    """The daemon remembered a secret's id: once an operator removed the idle secret
    (`docker secret rm`, it is listed by its label), every later job failed for good."""
    key = f"sk-redteam-{time.time_ns()}"
    key_file = tmp_path / "secrets.env"
    key_file.write_text(f"CODEX_API_KEY={key}\n")
    key_file.chmod(0o600)
    start_daemon(auth_mode="api_key", api_key_file=str(key_file))
    write_job(work_root / "inbox", "one.yaml", repo_url=repo_url, prompt="succeed", retries=0)
    assert wait_finished(work_root, "one.yaml", timeout=60)[0] == "done"
    wait_for(lambda: not services(docker_client, work_root), 30, "the first service gone")
    secret = docker_client.secrets.get(SwarmRunner._secret_name("CODEX_API_KEY", key))
    secret.remove()  # this test's own key: no other job uses it
    write_job(work_root / "inbox", "two.yaml", repo_url=repo_url, prompt="succeed", retries=0)
    folder, path = wait_finished(work_root, "two.yaml", timeout=60)
    assert folder == "done", exit_record(work_root, path)["reason"]
    wait_for(lambda: not services(docker_client, work_root), 30, "the second service gone")
    docker_client.secrets.get(SwarmRunner._secret_name("CODEX_API_KEY", key)).remove()
