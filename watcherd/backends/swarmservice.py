"""What a job's Swarm service looks like: the local container's ContainerSpec as a task
template (pure: a spec in, docker-py's types out)."""

from __future__ import annotations

import re
from typing import Any

import docker.types

from watcherd.backends.spec import ContainerSpec

JOB_MODE = docker.types.ServiceMode("replicated-job", replicas=1, concurrency=1)


def task_template(spec: ContainerSpec) -> docker.types.TaskTemplate:
    """Labels, user, environment, mounts, read-only root, dropped capabilities, an init and
    capped logs as the local container has them; memory and CPUs as limits and as
    reservations (Swarm places a job only where it fits), pids as a limit; never restarted
    by Swarm (the daemon retries)."""
    environment = dict(spec.environment)
    mounts = [
        docker.types.Mount(m.target, str(m.source), type="bind", read_only=m.read_only)
        for m in spec.mounts
    ] + [
        # A service's tmpfs has no owner option: one meant for the job's uid gets 1777.
        docker.types.Mount(
            target,
            None,
            type="tmpfs",
            tmpfs_size=tmpfs.size,
            tmpfs_mode=0o1777 if tmpfs.uid is not None else tmpfs.mode,
        )
        for target, tmpfs in spec.tmpfs.items()
    ]
    container = docker.types.ContainerSpec(
        spec.image,
        env=[f"{key}={value}" for key, value in environment.items()],
        user=spec.user,
        labels=dict(spec.labels),
        mounts=mounts,
        read_only=spec.read_only,
        cap_drop=list(spec.cap_drop),
        init=True,
        stop_grace_period=int(spec.stop_grace * 1e9),
        tty=False,
        open_stdin=False,
    )
    resources = docker.types.Resources(
        cpu_limit=spec.nano_cpus,
        mem_limit=spec.mem_limit,
        cpu_reservation=spec.nano_cpus,
        mem_reservation=spec.mem_limit,
    )
    resources["Limits"]["Pids"] = spec.pids_limit  # Engine API 1.41; docker-py lacks it
    return docker.types.TaskTemplate(
        container,
        resources=resources,
        restart_policy=docker.types.RestartPolicy(condition="none", max_attempts=0),
        placement=docker.types.Placement(constraints=list(spec.placement)),
        log_driver=docker.types.DriverConfig(
            "json-file", {"max-size": str(spec.log_max_size), "max-file": "2"}
        ),
        networks=[docker.types.NetworkAttachmentConfig(spec.network_mode)],
    )


_CONSTRAINT = re.compile(r"^\s*([\w.-]+)\s*(==|!=)\s*(.*?)\s*$")


def node_may_take(constraints: tuple[str, ...], node: dict[str, Any]) -> bool:
    """Whether Swarm could place a task of these constraints on ``node`` (a node as the
    Engine API lists it), whatever its state now: a node that is down may come back.
    As Swarm matches: values without regard to case, a label the node lacks is ``!=``
    any value. A constraint this cannot read counts as met (the careful answer where the
    question is "could it run elsewhere")."""
    spec = node.get("Spec") or {}
    description = node.get("Description") or {}
    platform = description.get("Platform") or {}
    known = {
        "node.id": node.get("ID"),
        "node.hostname": description.get("Hostname"),
        "node.role": spec.get("Role"),
        "node.platform.os": platform.get("OS"),
        "node.platform.arch": platform.get("Architecture"),
    }
    for constraint in constraints:
        found = _CONSTRAINT.match(constraint)
        if not found:
            continue
        key, operator, wanted = found.groups()
        if key in known:
            value = known[key]
        elif key.startswith("node.labels."):
            value = (spec.get("Labels") or {}).get(key.removeprefix("node.labels."))
        elif key.startswith("engine.labels."):
            labels = (description.get("Engine") or {}).get("Labels") or {}
            value = labels.get(key.removeprefix("engine.labels."))
        else:
            continue
        equal = value is not None and str(value).lower() == wanted.lower()
        if equal != (operator == "=="):
            return False
    return True
