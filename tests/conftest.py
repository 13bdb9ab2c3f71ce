from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.git_server import GitServer, make_repo
from tests.support.helpers import DaemonProcess, behave_image


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    client = docker.from_env()
    client.ping()  # no Engine is a failure here, not a skip: .ci/run starts one
    return client


@pytest.fixture(scope="session")
def behave(docker_client: docker.DockerClient) -> str:
    return behave_image()


@pytest.fixture(scope="session")
def repo_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local repository the daemon can fetch without a network (file:// is allowed in
    the daemon tests' config)."""
    return f"file://{make_repo(tmp_path_factory.mktemp('upstream') / 'widgets.git')}"


@pytest.fixture(scope="session")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """A git daemon on 127.0.0.1 serving demo.git (git:// URLs)."""
    base = tmp_path_factory.mktemp("git")
    make_repo(base / "demo.git")
    server = GitServer(base).start()
    yield server
    server.stop()


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
        "allowed_protocols": ["file", "https"],
        "stop_grace": 2,
    }


@pytest.fixture
def start_daemon(work_root: Path, daemon_config: dict[str, Any]) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def start(wait_ready: bool = True, **overrides: Any) -> DaemonProcess:
        daemon = DaemonProcess(work_root, {**daemon_config, **overrides})
        started.append(daemon)
        return daemon.start(wait_ready=wait_ready)

    yield start
    for daemon in started:
        daemon.stop()
