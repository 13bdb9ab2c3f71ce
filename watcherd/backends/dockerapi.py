"""One docker-py client per backend, and Docker's exceptions as the Runner seam's kinds."""

from __future__ import annotations

import io
import secrets
import tarfile
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from watcherd.backends.base import (
    ContainerState,
    EngineUnavailable,
    Gone,
    NameConflict,
    RunnerError,
    TransientRunnerError,
)

DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)
PROBE_LABEL = "watcherd.probe"
PROBE_LIMIT = 64 * 1024
PROBE_LEFTOVER_SECONDS = 600.0  # an older probe container is a crashed daemon's


def translate(exc: Exception) -> RunnerError:
    if isinstance(exc, docker.errors.NotFound):
        return Gone(str(exc.explanation or exc))
    if isinstance(exc, docker.errors.APIError):
        if exc.status_code == 409:
            return NameConflict(str(exc.explanation or exc))
        if exc.status_code == 503:
            # Going away or coming back ("This node is not a swarm manager" meanwhile).
            return EngineUnavailable(f"Docker Engine unavailable: {exc.explanation or exc}")
        if exc.is_server_error():
            return TransientRunnerError(f"Docker Engine error: {exc.explanation or exc}")
        return RunnerError(f"Docker refused: {exc.explanation or exc}")
    if isinstance(exc, DOCKER_ERRORS):
        # Refused, reset, or cut mid-response: the Engine went away (or is restarting).
        return EngineUnavailable(f"Docker Engine unreachable: {exc}")
    return RunnerError(str(exc))


class DockerAPI:
    """A lazily made client (the Engine may be down when the daemon starts) and calls
    whose failures come back translated."""

    def __init__(self, base_url: str | None = None, api_timeout: float = 60.0) -> None:
        self._base_url = base_url
        self._api_timeout = api_timeout
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                if self._base_url:
                    self._client = docker.DockerClient(
                        base_url=self._base_url, timeout=int(self._api_timeout)
                    )
                else:
                    self._client = docker.from_env(timeout=int(self._api_timeout))
            except DOCKER_ERRORS as exc:
                raise translate(exc) from exc
        return self._client

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DOCKER_ERRORS as exc:
            raise translate(exc) from exc

    def ping(self) -> None:
        self.call(lambda: self.client.ping())

    def info(self) -> dict[str, Any]:
        return dict(self.call(lambda: self.client.info()))

    def wait_container(self, container: str, timeout: float) -> int | None:
        """A container's exit code, or None if it still runs after ``timeout`` seconds."""
        try:
            result = self.client.api.wait(container, timeout=max(timeout, 0.1))
        except requests.exceptions.ReadTimeout:
            return None
        except requests.exceptions.ConnectionError as exc:
            # docker-py wraps socket read timeouts on unix sockets as ConnectionError.
            if "timed out" in str(exc).lower():
                return None
            raise translate(exc) from exc
        except DOCKER_ERRORS as exc:
            raise translate(exc) from exc
        return int(result.get("StatusCode", -1))

    def signal_container(self, container: str, signal: str = "SIGKILL") -> None:
        try:
            self.client.api.kill(container, signal=signal)
        except docker.errors.APIError as exc:
            if exc.status_code not in (404, 409):  # gone, or not running any more: fine
                raise translate(exc) from exc
        except DOCKER_ERRORS as exc:
            raise translate(exc) from exc

    def stop_container(self, container: str, grace: float) -> None:
        try:
            self.client.api.stop(container, timeout=int(grace))
        except docker.errors.NotFound:
            pass
        except DOCKER_ERRORS as exc:
            raise translate(exc) from exc

    def inspect_container(self, container: str) -> ContainerState:
        data = self.call(lambda: self.client.api.inspect_container(container))
        state = data.get("State", {})
        return ContainerState(
            status=str(state.get("Status", "unknown")),
            exit_code=state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            error=str(state.get("Error") or ""),
        )

    def read_mounted(self, folder: Path, name: str, image: str) -> bytes | None:
        """The file ``name`` in the host folder ``folder`` as this Engine's bind mounts
        see it (None: it sees no such file): a container of ``image`` is created with the
        folder bound in, never started, asked for the file (the Engine mounts a created
        container's binds to copy from it), and removed."""
        api = self.client.api
        for old in self.call(lambda: api.containers(all=True, filters={"label": PROBE_LABEL})):
            if time.time() - float(old.get("Created") or 0) > PROBE_LEFTOVER_SECONDS:
                self.call(api.remove_container, old["Id"], force=True)  # a crash's
        created = self.call(
            lambda: api.create_container(
                image, name=f"watcherd-probe-{secrets.token_hex(4)}", labels={PROBE_LABEL: "1"},
                network_disabled=True,
                host_config=api.create_host_config(
                    binds={str(folder): {"bind": "/watcherd-probe", "mode": "ro"}},
                    network_mode="none",
                ),
            )
        )  # fmt: skip
        try:
            try:
                stream, _stat = api.get_archive(created["Id"], f"/watcherd-probe/{name}")
            except docker.errors.NotFound:
                return None
            except DOCKER_ERRORS as exc:
                raise translate(exc) from exc
            data = b"".join(stream)
            with tarfile.open(fileobj=io.BytesIO(data)) as archive:
                member = archive.next()
                handle = archive.extractfile(member) if member is not None else None
                return handle.read(PROBE_LIMIT) if handle is not None else None
        finally:
            self.call(lambda: api.remove_container(created["Id"], force=True))
