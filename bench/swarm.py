"""Figure 7: the Swarm backend's service path beside the local one: 100 no-op jobs at
concurrency 4 through the same daemon, ``backend: local`` then ``backend: swarm`` (this
Engine as a one-node swarm), wall time and the added time per job.

Both run on the default bridge network: a Swarm service has no ``none`` network.
"""

from __future__ import annotations

import contextlib

import docker
import docker.errors

from bench.common import remove_containers, scratch
from bench.report import Figure, Report
from bench.throughput import daemon_wall

SECTION = "7 swarm"
CONCURRENCY = 4
# Swarm reserves what a job may use: a quarter of a core and 256 MiB each let four run
# at once on 2 cores (the local daemon gets the same limits).
LIMITS = {"cpus": 0.25, "memory_limit": "256m", "network_mode": "bridge"}


def run(report: Report, quick: bool, image: str, docker_client: docker.DockerClient) -> None:
    swarm = docker_client.info().get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        report.notes.append("section swarm skipped: this Engine is not a Swarm manager")
        return
    jobs = 12 if quick else 100
    walls: dict[str, float] = {}
    for backend in ("local", "swarm"):
        with scratch(f"swarm-{backend}") as base:
            try:
                walls[backend] = daemon_wall(
                    base, image, docker_client, jobs, CONCURRENCY, backend=backend, **LIMITS
                )
            finally:
                _remove_services(docker_client, base)
                remove_containers(docker_client, base / "work")
    local, on_swarm = walls["local"], walls["swarm"]
    per_job = (on_swarm - local) / jobs * CONCURRENCY * 1000  # what each slot spends more
    c = f"c={CONCURRENCY}"
    per_swarm_job = f"{on_swarm / jobs * 1000:.0f} ms per job"
    report.add(Figure(SECTION, f"{jobs} jobs {c}: backend swarm, wall", on_swarm, "s", local,
                      "backend local", note=per_swarm_job))  # fmt: skip
    report.add(Figure(SECTION, f"{jobs} jobs {c}: backend local, wall", local, "s",
                      note=f"{local / jobs * 1000:.0f} ms per job"))  # fmt: skip
    report.add(Figure(SECTION, "service path: added time per job (per slot)", per_job, "ms",
                      note="(swarm - local) wall / jobs x concurrency"))  # fmt: skip
    report.details["swarm"] = {"jobs": jobs, "concurrency": CONCURRENCY, **walls}
    report.notes.append("section swarm: both backends on network_mode bridge (Swarm has no none)")


def _remove_services(docker_client: docker.DockerClient, base: object) -> None:
    for service in docker_client.services.list(filters={"label": f"watcherd.root={base}/work"}):
        with contextlib.suppress(docker.errors.NotFound):
            service.remove()
