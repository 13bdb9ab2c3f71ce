"""Red team of the Swarm backend: a hostile job file, a hostile agent and the lifecycle of
a service on this Engine's one-node swarm. A task "on another node" is one the runner
is told runs elsewhere (its node id changed), so that its calls go through Swarm only.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tests.support.backends import remove_jobs_of, require_swarm
from tests.support.helpers import StartDaemon, exit_record, wait_finished, wait_for, write_job
from watcherd.agents import AGENTS
from watcherd.backends import NO_EXIT_CODE, RunnerError
from watcherd.backends.spec import ContainerSpec, Mount, Tmpfs
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
    assert (folder, record["state"]) == ("failed", "invalid"), record
    assert "cpus: must be at least 0.01" in record["reason"]  # refused before any service
    assert not services(docker_client, work_root)


# -- the runner on its own: a service as the daemon makes it ----------------------------


@pytest.fixture
def make_service(
    tmp_path: Path, behave: str, docker_client: docker.DockerClient
) -> Iterator[Callable[..., tuple[SwarmRunner, str]]]:
    """A job's service from the stand-in image, made by the Swarm runner; removed after."""
    require_swarm(docker_client)
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, 1000, 1000)
    label = f"redteam-{time.time_ns()}"
    made: list[str] = []

    def make(prompt: str, **changes: Any) -> tuple[SwarmRunner, str]:
        name = f"{label}-{len(made)}"
        spec = ContainerSpec(
            name=f"watcherd-{name}", image=behave, user="1000:1000",
            environment={"PROMPT": prompt}, mounts=(Mount(out, "/work/out"),),
            labels={"watcherd.job": name, "watcherd.root": str(tmp_path)},
            network_mode="bridge", mem_limit=64 * 1024**2, nano_cpus=10**8, pids_limit=64,
            log_max_size=1024**2, stop_grace=2,
            tmpfs={"/tmp": Tmpfs(size=1024**2, mode=0o1777)}, **changes,
        )  # fmt: skip
        runner = SwarmRunner()
        made.append(runner.start(spec))
        return runner, made[-1]

    yield make
    for handle in made:
        with contextlib.suppress(RunnerError):
            SwarmRunner().remove(handle)
    remove_jobs_of(docker_client, tmp_path)


def container_of(client: docker.DockerClient, handle: str) -> Any:
    def running() -> Any:
        for task in client.api.tasks(filters={"service": handle}):
            found = (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
            if found and task["Status"]["State"] == "running":
                with contextlib.suppress(docker.errors.NotFound):  # ended since the listing
                    return client.containers.get(found)
        return None

    return wait_for(running, 30, "the task's container running")


def test_a_task_has_no_privilege_to_gain(
    make_service: Callable[..., tuple[SwarmRunner, str]], docker_client: docker.DockerClient
) -> None:
    """No no-new-privileges on a service: what is left is an empty bounding set and the
    default seccomp filter. (Its key? There is none: the gateway keeps it in the daemon.)"""
    _, handle = make_service("hang")
    container = container_of(docker_client, handle)
    done = container.exec_run(
        ["bash", "-c", "grep -h -E '^(CapPrm|CapEff|CapBnd|CapAmb|Seccomp):' "
         "/proc/1/status /proc/self/status"], user="1000:1000",
    )  # fmt: skip
    status = done.output.decode(errors="replace")
    assert status.count("0000000000000000") == 8 and "Seccomp:\t2" in status, status


def test_a_stopped_task_on_another_node_ends_and_a_restarted_daemon_does_not_wait_forever(
    make_service: Callable[..., tuple[SwarmRunner, str]], docker_client: docker.DockerClient
) -> None:
    """A stop reaches a task only Swarm can reach (retire). Swarm then drops the record of
    the task that ran: the service shows only its never-placed next run, which a daemon
    restarted after the retire took for a job waiting for a place, forever (its timeout
    starts only once placed), and which kept a stop waiting its full slack."""
    runner, handle = make_service("hang")
    container = container_of(docker_client, handle)
    runner._node_id = "another-node"  # every task is elsewhere: calls go through Swarm
    began = time.monotonic()
    runner.stop(handle, grace=2)
    assert time.monotonic() - began < 20
    try:
        container.reload()
        assert container.status == "exited"  # stopped, not left running
    except docker.errors.NotFound:
        pass  # Swarm has already reaped the task's container: not left running either

    def placed() -> list[Any]:
        return [t for t in docker_client.api.tasks(filters={"service": handle}) if t.get("NodeID")]

    wait_for(lambda: not placed(), 30, "the record of the task that ran dropped")
    restarted = SwarmRunner()  # what the next start of the daemon makes
    job = docker_client.api.inspect_service(handle)["Spec"]["Labels"]["watcherd.job"]
    assert restarted.find(job) == handle
    assert restarted.unplaced(handle) is None  # not waiting for a place
    state = restarted.inspect(handle)
    assert (state.finished, state.exit_code) == (True, None), state
    assert restarted.wait(handle, 1.0) == NO_EXIT_CODE
    restarted._node_id = "another-node"
    restarted.stop(handle, grace=2)  # a second stop (the job's timeout, again): at once
    restarted.remove(handle)
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_service(handle)


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_no_agent_image_has_a_setuid_setgid_or_file_capability_program(
    agent: str, docker_client: docker.DockerClient
) -> None:
    """A service cannot ask for no-new-privileges (Engine 20.10): the images must give
    nothing to gain. The files of the image as a container sees them (its export), with
    security.capability as Docker exports it (SCHILY.xattr.security.capability)."""
    image = AGENTS[agent].image
    try:
        docker_client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{image} is not built (watcherd image build {agent})")
    created = docker_client.containers.create(image)
    found = []
    try:
        export = subprocess.Popen(["docker", "export", created.id], stdout=subprocess.PIPE)
        assert export.stdout is not None
        with tarfile.open(fileobj=export.stdout, mode="r|") as tar:
            for member in tar:
                special = member.mode & 0o6000 and not member.isdir()
                xattrs = [key for key in member.pax_headers if "capability" in key]
                if special or xattrs:
                    found.append((member.name, oct(member.mode), xattrs))
        assert export.wait() == 0
    finally:
        created.remove(force=True)
    assert found == []
