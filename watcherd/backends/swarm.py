"""The Swarm backend: each job is one ``replicated-job`` service (one task, never restarted).

The service carries what the local container would: labels, user, environment, mounts,
read-only root, dropped capabilities, an init, capped logs; its memory, CPUs and pids as
limits, and memory and CPUs as reservations too, so that Swarm places a job only on a node
where it fits. A job holds no credential (the gateway keeps the keys), and has no network
of its own: it joins the contained network. The handle is the service's id; the job's exit
code is its task's.

Where the task runs on this Engine (always, on a one-node swarm), waiting, stopping and
the OOM flag go through its container, as on the local backend; on another node, through
the task's record and Swarm: a stop "retires" the service (see ``_retire``), and a task
whose node is down is lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors

from watcherd.backends.base import (
    NO_EXIT_CODE,
    ContainerState,
    EngineUnavailable,
    Gone,
    Placement,
    RunnerError,
)
from watcherd.backends.dockerapi import DOCKER_ERRORS, DockerAPI, translate
from watcherd.backends.spec import JOB_LABEL, ROOT_LABEL, ContainerSpec
from watcherd.backends.swarmservice import JOB_MODE, node_may_take, task_template

POLL_SECONDS = 0.5  # a task on another node: its record, and its node's, while waiting
STARTING_POLL_SECONDS = 0.05  # a task being started: moments from a container to wait on
NOT_PLACED = ("new", "pending")  # Swarm has not found it a node yet
ENDED_WITH_CODE = ("complete", "failed")
EXITED_ERROR = "task: non-zero exit"  # a failed task's Err when its container exited so
NOT_STARTED_ERROR = "starting container failed"
ENDED_WITHOUT = ("shutdown", "rejected", "orphaned", "remove")  # no exit code of its own
# A constraint no node meets: a job service updated to it shuts its task down, and the
# task of its next run is never placed.
RETIRED = "node.id==watcherd-retired"
CONTAINED_NETWORK = "watcherd-contained"
CONTAINED_CONFIG = "watcherd-contained-config"
CONTAINED_OPTIONS = {
    "com.docker.network.bridge.inhibit_ipv4": "true",  # the node has no address on it
    "com.docker.network.bridge.enable_icc": "false",  # its containers cannot talk
}
# The Engine API request that makes those settings on a node (`docker network create
# --config-only`): the daemon on its own node, an operator (or a test) on every other.
CONTAINED_SETTINGS = {
    "Name": CONTAINED_CONFIG, "Driver": "bridge", "ConfigOnly": True,
    "Options": CONTAINED_OPTIONS, "Labels": {"watcherd": "contained"},
}  # fmt: skip
# How a node whose Engine died (kill -9, power loss) with a task on a swarm-scoped bridge
# rejects later tasks on it, or on a new one given the same subnet (moby#37087).
STALE_NETWORK = re.compile(r"network \w+ exists|overlapping IPv4")
STALE_NETWORK_HINT = (
    " (that node's Engine keeps a stale copy of the contained network since it died with "
    "a task on it, moby#37087: README, Swarm, says how to clear it)"
)
# A node refuses a task whose bind mount's source it lacks: the work root not mounted there,
# or (its sockets' folder) no relay running there.
MISSING_MOUNT = "bind source path does not exist"
MISSING_MOUNT_HINT = (
    " (every node needs the work root at the same path, and `watcherd relay` running for "
    "a job's sockets: README, Swarm)"
)
RETIRE_SLACK_SECONDS = 30.0  # for Swarm to tell a node to stop a task, beyond its grace


class SwarmRunner:
    def __init__(self, base_url: str | None = None, api_timeout: float = 60.0) -> None:
        self.docker = DockerAPI(base_url, api_timeout)
        self._node_id = ""
        self._contained = False  # CONTAINED_NETWORK is known to exist

    @property
    def client(self) -> docker.DockerClient:
        return self.docker.client

    def ping(self) -> None:
        swarm = self.docker.info().get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            # Waited for like an Engine that is down: a swarm may be being set up.
            raise EngineUnavailable(
                "backend swarm: this Docker Engine is not a Swarm manager "
                "(run `docker swarm init`, or set docker_host to a manager)"
            )
        self._node_id = str(swarm.get("NodeID") or "")

    @property
    def node_id(self) -> str:
        """This Engine's node in the swarm."""
        if not self._node_id:
            self._node_id = str((self.docker.info().get("Swarm") or {}).get("NodeID") or "")
        return self._node_id

    def live_restore(self) -> bool:
        return bool(self.docker.info().get("LiveRestoreEnabled"))

    # -- starting ------------------------------------------------------------------------

    def start(self, spec: ContainerSpec) -> str:
        """One service for one run. Swarm refuses a second service with the same name: the
        last guard against running a job twice (as Docker does for containers)."""
        if spec.nano_cpus <= 0 or spec.mem_limit <= 0:
            # Swarm reads 0 as "no limit and no reservation": a job file's `cpus: 1e-10`
            # (0 nano-CPUs once rounded) would run uncapped, placed on a node already full.
            raise RunnerError(
                f"cpus {spec.nano_cpus / 1e9:g} and memory {spec.mem_limit} bytes: "
                "a task needs at least 0.001 CPUs and 4 MiB"
            )
        if spec.network_mode == "none":
            spec = dataclasses.replace(spec, network_mode=self._contained_network())
        if f"node.id=={self.node_id}" in spec.placement:
            spec = dataclasses.replace(spec, image=self._image_here(spec.image))
        created = self.docker.call(
            lambda: self.client.api.create_service(
                task_template(spec), name=spec.name, labels=dict(spec.labels),
                mode=JOB_MODE,
            )
        )  # fmt: skip
        return str(created["ID"])

    def _image_here(self, image: str) -> str:
        """For a task only this node can take: its image by this Engine's ID for it. Given
        a name, Swarm first tries to pull it from a registry for every task (a round trip
        before its container is made, failing for a locally built image); an ID it does
        not pull. An image this Engine lacks keeps its name (the task then fails with
        Swarm's reason, as before)."""
        try:
            found = self.docker.call(lambda: self.client.api.inspect_image(image))
        except Gone:
            return image
        return str(found.get("Id") or image)

    def _contained_network(self) -> str:
        """Swarm has no "none" network for services: a job with no network of its own gets
        CONTAINED_NETWORK, a swarm-scoped bridge that is internal (no route out), gives the
        node no address on it (nothing of the node's is reachable) and lets no two
        containers on it talk. Its settings are a node-local config-only network, made here
        on this node; every other node that runs jobs needs the same (README, Swarm)."""
        if self._contained:
            return CONTAINED_NETWORK
        if not self._network_exists(CONTAINED_CONFIG, "local"):
            self._create_network(CONTAINED_SETTINGS)
        if not self._network_exists(CONTAINED_NETWORK, "swarm"):
            self._create_network({
                "Name": CONTAINED_NETWORK, "Driver": "bridge", "Scope": "swarm",
                "Internal": True, "ConfigFrom": {"Network": CONTAINED_CONFIG},  # no labels:
                # the Engine takes no other settings beside a ConfigFrom
            })  # fmt: skip
        self._contained = True
        return CONTAINED_NETWORK

    def _network_exists(self, name: str, scope: str) -> bool:
        # Asked of the scope that owns it: a node can list a swarm network the managers no
        # longer have (seen after removals on Engine 20.10), which a service cannot join.
        try:
            self.docker.call(lambda: self.client.api.inspect_network(name, scope=scope))
        except Gone:
            return False
        return True

    def _create_network(self, body: dict[str, Any]) -> None:
        # docker-py's create_network knows no ConfigOnly or ConfigFrom (Engine API 1.30+).
        api = self.client.api
        self.docker.call(lambda: api._result(api._post_json(api._url("/networks/create"),
                                                            data=body), True))  # fmt: skip

    def create(self, spec: ContainerSpec) -> None:
        return None  # a service is scheduled from the moment it exists: made by ``start``

    def resume(self, handle: str) -> None:
        pass  # a service is scheduled from the moment it exists

    # -- following -----------------------------------------------------------------------

    def _task(self, handle: str) -> dict[str, Any] | None:
        """The service's task, the newest should Swarm have made more than one."""
        tasks: list[dict[str, Any]] = self.docker.call(
            lambda: self.client.api.tasks(filters={"service": handle})
        )
        if not tasks:
            return None
        # The newest that was given a node: a retired service's next run never is.
        placed = [task for task in tasks if task.get("NodeID")] or tasks
        return max(placed, key=lambda task: str(task.get("CreatedAt", "")))

    @staticmethod
    def _ended(task: dict[str, Any]) -> bool:
        state = (task.get("Status") or {}).get("State")
        return state in ENDED_WITH_CODE or state in ENDED_WITHOUT

    def _local_container(self, task: dict[str, Any] | None) -> str | None:
        """The task's container when it runs on this Engine (its calls then work directly)."""
        if task is None or task.get("NodeID") != self.node_id:
            return None
        container = (task.get("Status") or {}).get("ContainerStatus", {}).get("ContainerID")
        return str(container) if container else None

    def unplaced(self, handle: str) -> str | None:
        """Why Swarm has not placed the task yet ("" before it says), None once it has."""
        task = self._task(handle)
        if task is None:
            return ""
        status = task.get("Status") or {}
        if status.get("State") not in NOT_PLACED or self._retired(handle, task):
            return None
        return str(status.get("Err") or "")

    def wait(self, handle: str, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while True:
            task = self._task(handle)
            state = self._state(handle, task)
            if state.finished:
                return NO_EXIT_CODE if state.exit_code is None else state.exit_code
            container = self._local_container(task)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if container is not None and state.status == "running":
                # Its task's record follows the container's exit a moment later.
                with contextlib.suppress(Gone):  # gone meanwhile: the next look says so
                    return self.docker.wait_container(container, remaining)
                continue
            pause = STARTING_POLL_SECONDS if state.status == "pending" else POLL_SECONDS
            time.sleep(min(pause, remaining))

    def inspect(self, handle: str) -> ContainerState:
        return self._state(handle, self._task(handle))

    def _state(self, handle: str, task: dict[str, Any] | None) -> ContainerState:
        """What the service's task record (and its container, when on this Engine) says."""
        if task is None:
            self.docker.call(lambda: self.client.api.inspect_service(handle))  # NotFound: gone
            return ContainerState("pending", None, oom_killed=False, error="")
        status = task.get("Status") or {}
        state = str(status.get("State", "unknown"))
        error = str(status.get("Err") or "")
        if self._retired(handle, task):  # its task that ran is gone from the records
            return ContainerState("exited", None, oom_killed=False, lost=True,
                                  error="task shutdown: its service was retired")  # fmt: skip
        if state == "failed" and not error.startswith(EXITED_ERROR):
            # Not its container's own end. It never started: the node's reason; else it
            # was lost under the task (an Engine restart: "No such container", exit 0).
            never_ran = error.startswith(NOT_STARTED_ERROR)
            return ContainerState("exited", None, oom_killed=False, lost=not never_ran,
                                  error=f"task failed: {error or 'no reason given'}")  # fmt: skip
        if state in ENDED_WITH_CODE:
            code = status.get("ContainerStatus", {}).get("ExitCode")
            container = self._local_container(task)
            oom = bool(container) and self._oom_killed(str(container))
            return ContainerState("exited", code, oom_killed=oom, error=error)
        if state in ENDED_WITHOUT:
            lost = state != "rejected"  # a rejection (no such image, no mount source) is ours
            why = error or str(status.get("Message") or state)
            if STALE_NETWORK.search(why):
                why += STALE_NETWORK_HINT
            elif MISSING_MOUNT in why:
                why += MISSING_MOUNT_HINT
            return ContainerState("exited", None, oom_killed=False, error=f"task {state}: {why}",
                                  lost=lost)  # fmt: skip
        container = self._local_container(task)
        if container is not None:  # its record may lag behind the container's own
            ended = self._container_state(container)
            if ended is not None:
                return ended
        elif task.get("NodeID"):
            # Swarm keeps the task of a node that went down "running" until the node is
            # back: for the job it is lost.
            node = self._node_down(str(task["NodeID"]))
            if node:
                return ContainerState("exited", None, oom_killed=False,
                                      error=f"its node {node} is down", lost=True)  # fmt: skip
        if state == "running":
            return ContainerState("running", None, oom_killed=False, error="")
        return ContainerState("pending", None, oom_killed=False, error=error)

    def _retired(self, handle: str, task: dict[str, Any]) -> bool:
        """Whether ``task`` is the never-placed next run of a retired service. Swarm may
        drop the record of the task that ran once its service is retired: that run ended,
        and there is no place to wait for (after a restart, the job would wait forever)."""
        if task.get("NodeID") or (task.get("Status") or {}).get("State") not in NOT_PLACED:
            return False
        service = self.docker.call(lambda: self.client.api.inspect_service(handle))
        placement = (service.get("Spec", {}).get("TaskTemplate") or {}).get("Placement") or {}
        return RETIRED in (placement.get("Constraints") or [])

    def _node_down(self, node_id: str) -> str:
        """The node's name if Swarm says it is down, else ""."""
        try:
            node = self.docker.call(lambda: self.client.api.inspect_node(node_id))
        except RunnerError:
            return ""  # left the swarm: its task's record says what became of it
        if (node.get("Status") or {}).get("State") != "down":
            return ""
        return str((node.get("Description") or {}).get("Hostname") or node_id[:12])

    def _container_state(self, container: str) -> ContainerState | None:
        """A local task container's end, if it has ended."""
        try:
            state = self.docker.inspect_container(container)
        except Gone:
            # Its record names it, yet this Engine has no such container: it went with the
            # Engine's restart (Swarm's record soon says so too).
            return ContainerState("exited", None, oom_killed=False, lost=True,
                                  error="its container is gone (the Engine restarted)")  # fmt: skip
        except RunnerError:
            return None
        return state if state.finished else None

    def _oom_killed(self, container: str) -> bool:
        try:
            return self.docker.inspect_container(container).oom_killed
        except RunnerError:
            return False  # the container is already gone: its task's record is all there is

    # -- ending --------------------------------------------------------------------------

    def kill(self, handle: str) -> None:
        self._end(handle, grace=None)

    def stop(self, handle: str, grace: float) -> None:
        self._end(handle, grace=grace)

    def _end(self, handle: str, grace: float | None) -> None:
        container = self._local_container(self._task(handle))
        if container is not None:
            if grace is None:
                self.docker.signal_container(container)
            else:
                self.docker.stop_container(container, grace)
            return
        self._retire(handle)
        # As a local stop does: back once the task has ended (or surely should have).
        deadline = time.monotonic() + (grace or 0.0) + RETIRE_SLACK_SECONDS
        while time.monotonic() < deadline and not self.inspect(handle).finished:
            time.sleep(POLL_SECONDS)

    def _retire(self, handle: str) -> None:
        """Stop a task on another node, which only Swarm reaches. Removing the service does
        not do it (Engine 20.10 leaves a job's task running); a new run of the job whose
        task can never be placed does: Swarm stops the old task (SIGTERM, SIGKILL after the
        stop grace period), and its exit code stays in its record."""
        service = self.docker.call(lambda: self.client.api.inspect_service(handle))
        spec = service["Spec"]
        template = dict(spec["TaskTemplate"])
        template["Placement"] = {"Constraints": [RETIRED]}
        template["ForceUpdate"] = int(template.get("ForceUpdate", 0)) + 1
        version = service["Version"]["Index"]
        self.docker.call(
            lambda: self.client.api.update_service(
                handle, version, task_template=template, name=spec["Name"],
                labels=spec.get("Labels"), mode=spec["Mode"],
            )
        )  # fmt: skip

    def remove(self, handle: str) -> None:
        """The service, and its task's container: Engine 20.10 leaves a job's exited
        container behind when its service goes (one on another node stays there), and a
        task still running there too: that one is stopped first."""
        try:
            task = self._task(handle)
            container = self._local_container(task)
            if container is None and task is not None and not self._ended(task):
                self._retire(handle)
            self.client.api.remove_service(handle)
            if container is not None:
                self.client.api.remove_container(container, force=True)
        except docker.errors.NotFound:
            pass
        except DOCKER_ERRORS as exc:
            raise translate(exc) from exc

    # -- finding -------------------------------------------------------------------------

    def find(self, job_id: str) -> str | None:
        found = self.docker.call(
            lambda: self.client.api.services(filters={"label": f"{JOB_LABEL}={job_id}"})
        )
        return str(found[0]["ID"]) if found else None

    def jobs(self, root: str) -> dict[str, str]:
        """job id → service id for every service of this work root."""
        found = self.docker.call(
            lambda: self.client.api.services(filters={"label": f"{ROOT_LABEL}={root}"})
        )
        return {
            s["Spec"]["Labels"][JOB_LABEL]: str(s["ID"])
            for s in found
            if JOB_LABEL in s.get("Spec", {}).get("Labels", {})
        }

    def logs_tail(self, handle: str, lines: int) -> str:
        try:
            chunks = self.client.api.service_logs(handle, stdout=True, stderr=True, tail=lines)
            return b"".join(chunks).decode("utf-8", "replace")
        except DOCKER_ERRORS:
            return ""

    # -- the daemon's own node -----------------------------------------------------------

    def placement(self, constraints: tuple[str, ...]) -> Placement:
        """Kept on this node (``node.id``) when no other node of the swarm could take a
        task of ``constraints``; else the first other node that could, by name."""
        nodes: list[dict[str, Any]] = self.docker.call(lambda: self.client.api.nodes())
        for node in nodes:
            if node.get("ID") != self.node_id and node_may_take(constraints, node):
                name = (node.get("Description") or {}).get("Hostname") or str(node.get("ID"))[:12]
                return Placement(constraints, elsewhere=str(name))
        return Placement((*constraints, f"node.id=={self.node_id}"))

    def read_mounted(self, folder: Path, name: str, image: str) -> bytes | None:
        """As this node's Engine sees it (the one that runs the tasks kept here)."""
        return self.docker.read_mounted(folder, name, image)
