from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.helpers import DaemonProcess, behave_image


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    client = docker.from_env()
    client.ping()  # no Engine is a failure here, not a skip: .ci/run starts one
    return client


@pytest.fixture(scope="session")
def behave(docker_client: docker.DockerClient) -> str:
    return behave_image()


@pytest.fixture
def work_root(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[Path]:
    root = tmp_path / "work"
    root.mkdir()
    yield root
    for container in docker_client.containers.list(
        all=True, filters={"label": f"watcherd.root={root}"}
    ):
        container.remove(force=True)


@pytest.fixture
def daemon_config(behave: str) -> dict[str, Any]:
    return {
        "image": behave,
        "auth_mode": "none",
        "network_mode": "none",
        "settle_seconds": 0.1,
        "backoff_initial": 0.1,
        "backoff_max": 0.5,
        "rescan_seconds": 5,
        "concurrency": 2,
    }


@pytest.fixture
def start_daemon(work_root: Path, daemon_config: dict[str, Any]) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def start(
        wait_ready: bool = True, env: dict[str, str] | None = None, **overrides: Any
    ) -> DaemonProcess:
        daemon = DaemonProcess(work_root, {**daemon_config, **overrides}, env=env)
        started.append(daemon)
        return daemon.start(wait_ready=wait_ready)

    yield start
    for daemon in started:
        daemon.stop()
