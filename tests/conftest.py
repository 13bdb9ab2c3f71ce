from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.backends import for_backend, remove_jobs_of
from tests.support.git_server import GitServer, make_repo
from tests.support.helpers import DaemonProcess, StartDaemon, behave_image
from tests.support.model_server import ScriptedModel, codex_config
from watcherd.config import DEFAULT_IMAGE


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
def backend() -> str:
    """The daemon's backend; tests that hold on both say so (tests/support/backends.py)."""
    return "local"


@pytest.fixture
def work_root(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[Path]:
    root = tmp_path / "work"
    root.mkdir()
    yield root
    remove_jobs_of(docker_client, root)


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
def start_daemon(
    work_root: Path, daemon_config: dict[str, Any], backend: str, docker_client: docker.DockerClient
) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def start(
        wait_ready: bool = True, env: dict[str, str] | None = None, **overrides: Any
    ) -> DaemonProcess:
        # An override of None leaves the key out: the daemon's own default.
        merged = {k: v for k, v in {**daemon_config, **overrides}.items() if v is not None}
        config = for_backend(backend, merged, docker_client)
        daemon = DaemonProcess(work_root, config, env=env)
        started.append(daemon)
        return daemon.start(wait_ready=wait_ready)

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    server = ScriptedModel(steps=[]).start()
    yield server
    server.stop()


@pytest.fixture
def codex_daemon(
    start_daemon: StartDaemon,
    model: ScriptedModel,
    tmp_path: Path,
    docker_client: docker.DockerClient,
) -> Callable[..., DaemonProcess]:
    """A daemon running the real worker image against the scripted model; ``logins``
    login dirs (each one job at a time), each with a config.toml for the model."""
    docker_client.images.get(DEFAULT_IMAGE)  # built by .ci/run (watcherd image build)

    def start(logins: int = 1, **overrides: Any) -> DaemonProcess:
        dirs = [tmp_path / f"auth{n}" for n in range(logins)]
        for auth in dirs:
            auth.mkdir(exist_ok=True)
            (auth / "config.toml").write_text(codex_config(model.base_url))
        config = {
            "image": DEFAULT_IMAGE,
            "auth_mode": "login",
            "auth_dirs": [str(auth) for auth in dirs],
            "allowed_protocols": ["git", "https"],
            "extra_env": {"SCRIPTED_API_KEY": "test-key"},
            "default_timeout": 120,
            **overrides,
        }
        return start_daemon(**config)

    return start
