"""Running containers: a small interface, and its implementation on docker-py.

The runner knows Docker and nothing about spools or retries. It turns Docker's
many exceptions into three the caller can act on: the Engine is unavailable
(wait for it), a transient API error (retry), a permanent one (fail the job).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import docker
import docker.errors
import requests.exceptions

from watcherd.container import JOB_LABEL, ROOT_LABEL, ContainerSpec


class RunnerError(Exception):
    """A container operation failed for good (bad image name, refused config, ...)."""


class TransientRunnerError(RunnerError):
    """Worth retrying: the Engine said 5xx, or a network hiccup."""


class EngineUnavailable(TransientRunnerError):
    """Nothing answers on the Docker socket."""


class NameConflict(RunnerError):
    """A container with this job's name exists: a previous attempt's, to adopt."""


@dataclass(frozen=True)
class ContainerState:
    status: str  # created, running, exited, dead, ...
    exit_code: int | None
    oom_killed: bool
    error: str

    @property
    def finished(self) -> bool:
        return self.status in ("exited", "dead")


class Runner(Protocol):
    def ping(self) -> None: ...
    def live_restore(self) -> bool: ...
    def start(self, spec: ContainerSpec) -> str: ...
    def resume(self, handle: str) -> None: ...
    def wait(self, handle: str, timeout: float) -> int | None: ...
    def kill(self, handle: str) -> None: ...
    def stop(self, handle: str, grace: float) -> None: ...
    def remove(self, handle: str) -> None: ...
    def inspect(self, handle: str) -> ContainerState: ...
    def find(self, job_id: str) -> str | None: ...
    def jobs(self, root: str) -> dict[str, str]: ...
    def logs_tail(self, handle: str, lines: int) -> str: ...


def _translate(exc: Exception) -> RunnerError:
    if isinstance(exc, docker.errors.NotFound):
        return RunnerError(str(exc.explanation or exc))
    if isinstance(exc, docker.errors.APIError):
        if exc.status_code == 409:
            return NameConflict(str(exc.explanation or exc))
        if exc.is_server_error():
            return TransientRunnerError(f"Docker Engine error: {exc.explanation or exc}")
        return RunnerError(f"Docker refused: {exc.explanation or exc}")
    if isinstance(exc, requests.exceptions.RequestException | docker.errors.DockerException):
        # Refused, reset, or cut mid-response: the Engine went away (or is restarting).
        return EngineUnavailable(f"Docker Engine unreachable: {exc}")
    return RunnerError(str(exc))


_DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


class DockerRunner:
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
            except _DOCKER_ERRORS as exc:
                raise _translate(exc) from exc
        return self._client

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _DOCKER_ERRORS as exc:
            raise _translate(exc) from exc

    def ping(self) -> None:
        self._call(lambda: self.client.ping())

    def live_restore(self) -> bool:
        """Whether the Engine keeps containers running while it restarts."""
        return bool(self._call(lambda: self.client.info()).get("LiveRestoreEnabled"))

    def start(self, spec: ContainerSpec) -> str:
        """Create and start. Docker refuses a second container with the same name:
        the last guard against running a job twice."""
        container = self._call(
            lambda: self.client.containers.create(
                spec.image,
                name=spec.name,
                user=spec.user,
                environment=dict(spec.environment),
                labels=dict(spec.labels),
                mounts=[
                    docker.types.Mount(m.target, str(m.source), type="bind", read_only=m.read_only)
                    for m in spec.mounts
                ],
                tmpfs=dict(spec.tmpfs),
                network_mode=spec.network_mode,
                mem_limit=spec.mem_limit,
                memswap_limit=spec.mem_limit,
                nano_cpus=spec.nano_cpus,
                pids_limit=spec.pids_limit,
                # Bounded: what a job prints must not fill the Engine's disk.
                log_config=docker.types.LogConfig(
                    type="json-file",
                    config={"max-size": str(spec.log_max_size), "max-file": "2"},
                ),
                read_only=spec.read_only,
                cap_drop=list(spec.cap_drop),
                security_opt=list(spec.security_opt),
                privileged=False,
                init=True,
                stdin_open=False,
                tty=False,
                detach=True,
            )
        )
        self.resume(container.id)
        return str(container.id)

    def resume(self, handle: str) -> None:
        """Start a created container (a crash may have come between create and start)."""
        self._call(lambda: self.client.api.start(handle))

    def wait(self, handle: str, timeout: float) -> int | None:
        """The exit code, or None if it is still running after ``timeout`` seconds."""
        try:
            result = self.client.api.wait(handle, timeout=max(timeout, 0.1))
        except requests.exceptions.ReadTimeout:
            return None
        except requests.exceptions.ConnectionError as exc:
            # docker-py wraps socket read timeouts on unix sockets as ConnectionError.
            if "timed out" in str(exc).lower():
                return None
            raise _translate(exc) from exc
        except _DOCKER_ERRORS as exc:
            raise _translate(exc) from exc
        return int(result.get("StatusCode", -1))

    def kill(self, handle: str) -> None:
        try:
            self.client.api.kill(handle)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # not running any more: fine
                raise _translate(exc) from exc
        except _DOCKER_ERRORS as exc:
            raise _translate(exc) from exc

    def stop(self, handle: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (the worker saves the agent's work
        in between)."""
        try:
            self.client.api.stop(handle, timeout=int(grace))
        except docker.errors.NotFound:
            pass
        except _DOCKER_ERRORS as exc:
            raise _translate(exc) from exc

    def remove(self, handle: str) -> None:
        try:
            self.client.api.remove_container(handle, force=True)
        except docker.errors.NotFound:
            pass
        except _DOCKER_ERRORS as exc:
            raise _translate(exc) from exc

    def inspect(self, handle: str) -> ContainerState:
        data = self._call(lambda: self.client.api.inspect_container(handle))
        state = data.get("State", {})
        return ContainerState(
            status=str(state.get("Status", "unknown")),
            exit_code=state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            error=str(state.get("Error") or ""),
        )

    def find(self, job_id: str) -> str | None:
        found = self._call(
            lambda: self.client.api.containers(all=True, filters={"label": f"{JOB_LABEL}={job_id}"})
        )
        return str(found[0]["Id"]) if found else None

    def jobs(self, root: str) -> dict[str, str]:
        """job id → container id for every container of this work root."""
        found = self._call(
            lambda: self.client.api.containers(all=True, filters={"label": f"{ROOT_LABEL}={root}"})
        )
        return {c["Labels"][JOB_LABEL]: str(c["Id"]) for c in found if JOB_LABEL in c["Labels"]}

    def logs_tail(self, handle: str, lines: int) -> str:
        try:
            raw = self.client.api.logs(handle, stdout=True, stderr=True, tail=lines)
        except _DOCKER_ERRORS:
            return ""
        return bytes(raw).decode("utf-8", "replace")
