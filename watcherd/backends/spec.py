"""What a runner is asked to run: one job container's image, user, mounts and limits.

The job's life builds a ContainerSpec (watcherd.job.container); each backend turns it
into Docker calls, a container on one Engine or a service on a Swarm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

CONTAINER_PREFIX = "watcherd-"
JOB_LABEL = "watcherd.job"
ROOT_LABEL = "watcherd.root"


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Tmpfs:
    size: int
    mode: int
    uid: int | None = None  # the owner; a Swarm service cannot set one, so it gets the mode
    gid: int | None = None

    @property
    def options(self) -> str:
        owner = f",uid={self.uid},gid={self.gid}" if self.uid is not None else ""
        return f"rw,nosuid,nodev,mode={self.mode:o}{owner},size={self.size}"


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    user: str
    environment: Mapping[str, str]
    mounts: tuple[Mount, ...]
    labels: Mapping[str, str]
    network_mode: str
    mem_limit: int
    nano_cpus: int
    pids_limit: int
    log_max_size: int
    stop_grace: float = 30.0
    tmpfs: Mapping[str, Tmpfs] = field(default_factory=dict)
    placement: tuple[str, ...] = ()  # Swarm constraints, from the config's named pools
    read_only: bool = True
    cap_drop: tuple[str, ...] = ("ALL",)
    security_opt: tuple[str, ...] = ("no-new-privileges",)


def container_name(job_id: str) -> str:
    return f"{CONTAINER_PREFIX}{job_id}"
