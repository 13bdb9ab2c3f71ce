"""The local backend: each job is one container on one Docker Engine, through docker-py."""

from __future__ import annotations

from pathlib import Path

import docker
import docker.errors

from watcherd.backends.base import ContainerState, Placement
from watcherd.backends.dockerapi import DOCKER_ERRORS, DockerAPI, translate
from watcherd.backends.spec import JOB_LABEL, ROOT_LABEL, ContainerSpec


class LocalRunner:
    def __init__(self, base_url: str | None = None, api_timeout: float = 60.0) -> None:
        self.docker = DockerAPI(base_url, api_timeout)

    @property
    def client(self) -> docker.DockerClient:
        return self.docker.client

    def ping(self) -> None:
        self.docker.ping()

    def live_restore(self) -> bool:
        """Whether the Engine keeps containers running while it restarts."""
        return bool(self.docker.info().get("LiveRestoreEnabled"))

    def start(self, spec: ContainerSpec) -> str:
        """Create and start."""
        handle = self.create(spec)
        self.resume(handle)
        return handle

    def create(self, spec: ContainerSpec) -> str:
        """Made, not started (``resume`` starts it). Docker refuses a second container with
        the same name: the last guard against running a job twice."""
        container = self.docker.call(
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
                tmpfs={target: tmpfs.options for target, tmpfs in spec.tmpfs.items()},
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
        return str(container.id)

    def resume(self, handle: str) -> None:
        """Start a created container (a crash may have come between create and start)."""
        self.docker.call(lambda: self.client.api.start(handle))

    def unplaced(self, handle: str) -> str | None:
        return None  # one Engine: a started container has its place

    def wait(self, handle: str, timeout: float) -> int | None:
        """The exit code, or None if it is still running after ``timeout`` seconds."""
        return self.docker.wait_container(handle, timeout)

    def kill(self, handle: str) -> None:
        self.docker.signal_container(handle)

    def stop(self, handle: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (the worker saves the agent's work
        in between)."""
        self.docker.stop_container(handle, grace)

    def remove(self, handle: str) -> None:
        try:
            self.client.api.remove_container(handle, force=True)
        except docker.errors.NotFound:
            pass
        except DOCKER_ERRORS as exc:
            raise translate(exc) from exc

    def inspect(self, handle: str) -> ContainerState:
        return self.docker.inspect_container(handle)

    def find(self, job_id: str) -> str | None:
        found = self.docker.call(
            lambda: self.client.api.containers(all=True, filters={"label": f"{JOB_LABEL}={job_id}"})
        )
        return str(found[0]["Id"]) if found else None

    def jobs(self, root: str) -> dict[str, str]:
        """job id → container id for every container of this work root."""
        found = self.docker.call(
            lambda: self.client.api.containers(all=True, filters={"label": f"{ROOT_LABEL}={root}"})
        )
        return {c["Labels"][JOB_LABEL]: str(c["Id"]) for c in found if JOB_LABEL in c["Labels"]}

    def logs_tail(self, handle: str, lines: int) -> str:
        try:
            raw = self.client.api.logs(handle, stdout=True, stderr=True, tail=lines)
        except DOCKER_ERRORS:
            return ""
        return bytes(raw).decode("utf-8", "replace")

    def placement(self, constraints: tuple[str, ...]) -> Placement:
        return Placement(constraints)  # one Engine: the daemon's host, if it is local

    def read_mounted(self, folder: Path, name: str, image: str) -> bytes | None:
        return self.docker.read_mounted(folder, name, image)
