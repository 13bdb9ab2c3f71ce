"""The Runner seam: what a job's life asks of a backend, and the errors it can act on.

A backend turns a ContainerSpec into something that runs (a container on one Engine, a
Swarm service) and knows nothing about spools or retries. Its many failures come back as
three kinds: the Engine is unavailable (wait for it), a transient API error (retry), a
permanent one (fail the job).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from watcherd.backends.spec import ContainerSpec

# What ``wait`` returns for a container that ended without an exit code of its own (a Swarm
# task rejected by its node, or lost with it): ``inspect`` then says why.
NO_EXIT_CODE = -1


class RunnerError(Exception):
    """A container operation failed for good (bad image name, refused config, ...)."""


class TransientRunnerError(RunnerError):
    """Worth retrying: the Engine said 5xx, or a network hiccup."""


class EngineUnavailable(TransientRunnerError):
    """Nothing answers on the Docker socket."""


class Gone(RunnerError):
    """The container (or service) asked about does not exist (any more)."""


class NameConflict(RunnerError):
    """A container with this job's name exists: a previous attempt's, to adopt."""


@dataclass(frozen=True)
class ContainerState:
    status: str  # created, pending, running, exited, dead, ...
    exit_code: int | None
    oom_killed: bool
    error: str
    lost: bool = False  # gone with its node or Engine, not ended by itself: worth a retry

    @property
    def finished(self) -> bool:
        return self.status in ("exited", "dead")


@dataclass(frozen=True)
class Placement:
    """Where a task of some constraints may run, as the daemon's own filesystems need to
    know: ``constraints`` keep it on the daemon's host, unless ``elsewhere`` names another
    node that could take it (then its mounts would not be there)."""

    constraints: tuple[str, ...]
    elsewhere: str = ""


class Runner(Protocol):
    def ping(self) -> None: ...
    def live_restore(self) -> bool: ...
    def start(self, spec: ContainerSpec) -> str: ...
    def create(self, spec: ContainerSpec) -> str | None: ...
    def resume(self, handle: str) -> None: ...
    def unplaced(self, handle: str) -> str | None: ...
    def wait(self, handle: str, timeout: float) -> int | None: ...
    def kill(self, handle: str) -> None: ...
    def stop(self, handle: str, grace: float) -> None: ...
    def remove(self, handle: str) -> None: ...
    def inspect(self, handle: str) -> ContainerState: ...
    def find(self, job_id: str) -> str | None: ...
    def jobs(self, root: str) -> dict[str, str]: ...
    def logs_tail(self, handle: str, lines: int) -> str: ...
    def placement(self, constraints: tuple[str, ...]) -> Placement: ...
    def read_mounted(self, folder: Path, name: str, image: str) -> bytes | None: ...
