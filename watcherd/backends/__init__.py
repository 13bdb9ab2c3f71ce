"""Backends: where a job's container runs. Names map to classes here, and only here."""

from __future__ import annotations

from collections.abc import Callable

from watcherd.backends.base import (
    NO_EXIT_CODE,
    ContainerState,
    EngineUnavailable,
    NameConflict,
    Runner,
    RunnerError,
    TransientRunnerError,
)
from watcherd.backends.local import LocalRunner
from watcherd.backends.swarm import SwarmRunner
from watcherd.config import Config

BACKENDS: dict[str, Callable[[Config], Runner]] = {
    "local": lambda config: LocalRunner(config.docker_host),
    "swarm": lambda config: SwarmRunner(config.docker_host),
}


def make_runner(config: Config) -> Runner:
    return BACKENDS[config.backend](config)


__all__ = [
    "BACKENDS",
    "NO_EXIT_CODE",
    "ContainerState",
    "EngineUnavailable",
    "LocalRunner",
    "NameConflict",
    "Runner",
    "RunnerError",
    "SwarmRunner",
    "TransientRunnerError",
    "make_runner",
]
