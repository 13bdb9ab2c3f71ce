"""Running a test on both backends: ``@on_both_backends`` and the config each one needs.

A test marked so runs once with the local backend and once with ``backend: swarm`` on the
Engine's swarm (``.ci/run`` makes this Engine a one-node swarm and leaves it afterwards).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from watcherd.config.relay import DEFAULT_SOCKETS_DIR
from watcherd.util import loopfs

on_both_backends = pytest.mark.parametrize("backend", ["local", "swarm"])

# Swarm reserves what a job may use: two cores (and 4 GiB) each would place one job at a
# time on a 2-core machine.
SWARM_TEST_CPUS = 0.5
SWARM_TEST_MEMORY = "1g"


def require_swarm(client: docker.DockerClient) -> None:
    swarm = client.info().get("Swarm") or {}
    if swarm.get("LocalNodeState") == "active" and swarm.get("ControlAvailable"):
        return
    message = "this Engine is not a Swarm manager (docker swarm init --advertise-addr 127.0.0.1)"
    if os.environ.get("CI"):
        pytest.fail(message)  # .ci/run makes one: a missing swarm is its failure
    pytest.skip(message)


def for_backend(
    backend: str, config: dict[str, Any], client: docker.DockerClient
) -> dict[str, Any]:
    """The daemon config for ``backend``."""
    if backend == "local":
        return config
    require_swarm(client)
    return {
        **config,
        "backend": "swarm",
        "cpus": min(float(config.get("cpus", SWARM_TEST_CPUS)), SWARM_TEST_CPUS),
        "memory_limit": config.get("memory_limit", SWARM_TEST_MEMORY),
    }


def remove_jobs_of(client: docker.DockerClient, root: Path) -> None:
    """Every service and container a test's daemons left for this work root, and the
    mounts of its jobs' filesystems."""
    label = {"label": f"watcherd.root={root}"}
    if (client.info().get("Swarm") or {}).get("ControlAvailable"):
        for service in client.services.list(filters=label):
            service.remove()
    for container in client.containers.list(ignore_removed=True, all=True, filters=label):
        # A removed service's container may be on its way out already (409) or gone.
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)
    release_mounts(root)


def release_mounts(root: Path) -> None:
    """The job filesystems a test's daemons left mounted below ``root`` (workspaces kept
    for inspection): unmounted, so that the folder can go and its loop devices free
    themselves."""
    for mount in loopfs.mounts_below(root):
        with contextlib.suppress(OSError):
            loopfs.unmount(mount.target)


def job_binds(container: Any) -> dict[str, tuple[str, bool]]:
    """A job container's bind mounts, target -> (source, writable)."""
    mounts = container.attrs["Mounts"]
    return {m["Destination"]: (m["Source"], m["RW"]) for m in mounts if m["Source"]}


def expected_binds(
    root: Path, job_id: str, repo_dir: str, backend: str = "local"
) -> dict[str, tuple[str, bool]]:
    """What a job's container must see, on either backend: its own workspace, out/ and
    agent home writable, its repository's cache objects and its gateway sockets'
    folder read-only, nothing else. On Swarm the sockets' folder is the node-local link
    every node's relay serves (README, Swarm, Relays)."""
    cache = next((root / "cache").glob("*.git")) / "objects"
    sockets = root / "run" / job_id
    if backend == "swarm":
        sockets = DEFAULT_SOCKETS_DIR / job_id
    return {
        f"/work/{repo_dir}": (str(root / "workspaces" / job_id), True),
        "/work/out": (str(root / "out" / job_id), True),
        "/home/codex/.codex": (str(root / "homes" / job_id), True),
        f"/{cache.relative_to(root)}": (str(cache), False),  # the cache: read-only
        "/run/watcherd": (str(sockets), False),  # its sockets, nothing else
    }
