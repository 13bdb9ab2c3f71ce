"""How the Swarm backend reads a task's record (pure logic, a stand-in for the API): the
states one node cannot show, a task lost with its node, one rejected by its node; and
which tasks only the daemon's own node can take (where a job's filesystem is)."""

from __future__ import annotations

from typing import Any

import pytest

from watcherd.backends import NO_EXIT_CODE
from watcherd.backends.base import Gone
from watcherd.backends.spec import ContainerSpec
from watcherd.backends.swarm import SwarmRunner
from watcherd.backends.swarmservice import node_may_take

HERE, THERE = "node-here", "node-there"


class FakeAPI:
    def __init__(self, tasks: list[dict[str, Any]], down: bool) -> None:
        self._tasks = tasks
        self._down = down
        self.node_list: list[dict[str, Any]] = [node(HERE, "manager")]

    def nodes(self) -> list[dict[str, Any]]:
        return self.node_list

    def inspect_node(self, node: str) -> dict[str, Any]:
        state = "down" if self._down else "ready"
        return {"Status": {"State": state}, "Description": {"Hostname": f"host-{node}"}}

    def tasks(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        return self._tasks

    def inspect_container(self, container: str) -> dict[str, Any]:
        return {"State": {"Status": "exited", "ExitCode": 137, "OOMKilled": True}}

    def inspect_image(self, image: str) -> dict[str, Any]:
        if image != "worker:1":
            raise Gone(f"no such image: {image}")
        return {"Id": "sha256:" + "ab" * 32}

    def create_service(self, template: dict[str, Any], **kwargs: Any) -> dict[str, str]:
        self.created = template["ContainerSpec"]["Image"]
        return {"ID": "svc"}


class FakeClient:
    def __init__(self, tasks: list[dict[str, Any]], down: bool) -> None:
        self.api = FakeAPI(tasks, down)

    def info(self) -> dict[str, Any]:
        return {"Swarm": {"NodeID": HERE, "LocalNodeState": "active", "ControlAvailable": True}}


def runner_with(*tasks: dict[str, Any], node_down: bool = False) -> SwarmRunner:
    runner = SwarmRunner()
    runner.docker._client = FakeClient(list(tasks), node_down)
    return runner


def task(state: str, node: str = THERE, created: str = "2026-11-27T10:00:00Z",
         **status: Any) -> dict[str, Any]:  # fmt: skip
    return {"NodeID": node, "CreatedAt": created, "Status": {"State": state, **status}}


@pytest.mark.parametrize("state", ["shutdown", "orphaned"])
def test_a_task_gone_with_its_node_is_lost_and_worth_another_attempt(state: str) -> None:
    runner = runner_with(task(state, Err="node is down"))
    found = runner.inspect("svc")
    assert (found.finished, found.lost, found.exit_code) == (True, True, None)
    assert found.error == f"task {state}: node is down"
    assert runner.wait("svc", 1.0) == NO_EXIT_CODE


def test_a_task_still_running_on_a_node_that_is_down_is_lost() -> None:
    found = runner_with(task("running"), node_down=True).inspect("svc")
    assert (found.finished, found.lost, found.exit_code) == (True, True, None)
    assert found.error == f"its node host-{THERE} is down"
    assert runner_with(task("running")).inspect("svc").status == "running"


def test_a_rejected_task_never_ran_and_is_not_worth_retrying() -> None:
    found = runner_with(task("rejected", Err="No such image: nothing:1")).inspect("svc")
    assert (found.finished, found.lost) == (True, False)
    assert "No such image: nothing:1" in found.error


@pytest.mark.parametrize("err", [
    "network t2y63ri7bb0l9w5nulzf7c9tw exists",
    "cannot create network 8uao (br-8uao): conflicts with network cvak (br-cvak): "
    "networks have overlapping IPv4",
])  # fmt: skip
def test_a_node_holding_a_stale_network_copy_is_named_in_the_reason(err: str) -> None:
    """What Engine 20.10 says on a node that died with a task on the contained network
    (seen on CI: every Swarm job failed with it): the reason points to the fix."""
    found = runner_with(task("rejected", Err=err)).inspect("svc")
    assert (found.finished, found.lost) == (True, False)
    assert err in found.error and "moby#37087" in found.error and "README" in found.error


def test_an_ended_task_on_another_node_gives_its_exit_code() -> None:
    code = {"ContainerStatus": {"ContainerID": "c1", "ExitCode": 3}}
    found = runner_with(task("failed", Err="task: non-zero exit (3)", **code)).inspect("svc")
    assert (found.status, found.exit_code) == ("exited", 3)
    assert not (found.lost or found.oom_killed)


def test_a_local_containers_end_is_read_before_its_task_record_follows() -> None:
    running_here = task("running", node=HERE, ContainerStatus={"ContainerID": "c1"})
    found = runner_with(running_here).inspect("svc")
    assert (found.status, found.exit_code, found.oom_killed) == ("exited", 137, True)


@pytest.mark.parametrize(
    ("image", "placement", "given"),
    [
        ("worker:1", (f"node.id=={HERE}",), "sha256:" + "ab" * 32),  # only here: by its ID
        ("worker:1", (), "worker:1"),  # another node may take it: its own image of the name
        ("missing:1", (f"node.id=={HERE}",), "missing:1"),  # not here: Swarm says why
    ],
)
def test_a_task_only_this_node_can_take_names_its_image_by_id_so_swarm_pulls_nothing(
    image: str, placement: tuple[str, ...], given: str
) -> None:
    runner = runner_with()
    spec = ContainerSpec(
        name="watcherd-x", image=image, user="1000:1000", environment={}, mounts=(),
        labels={}, network_mode="bridge", mem_limit=2**28, nano_cpus=10**9, pids_limit=64,
        log_max_size=2**20, placement=placement,
    )  # fmt: skip
    assert runner.start(spec) == "svc"
    assert runner.docker._client.api.created == given


def test_the_newest_task_counts() -> None:
    old = task("failed", created="2026-11-27T09:00:00Z", ContainerStatus={"ExitCode": 1})
    new = task("running", created="2026-11-27T10:00:00Z")
    assert runner_with(old, new).inspect("svc").status == "running"


def test_unplaced_says_why_until_the_task_has_a_node() -> None:
    assert runner_with().unplaced("svc") == ""  # no task yet
    waiting = task("pending", Err="no suitable node (insufficient resources on 1 node)")
    assert runner_with(waiting).unplaced("svc") == waiting["Status"]["Err"]
    assert runner_with(task("assigned")).unplaced("svc") is None
    assert runner_with(task("running")).unplaced("svc") is None


def test_a_retired_service_is_judged_by_the_task_that_ran_not_its_unplaceable_next_run() -> None:
    ran = task("shutdown", created="2026-11-27T09:00:00Z", ContainerStatus={"ExitCode": 124})
    ran["Status"]["State"] = "complete"
    never = {"NodeID": "", "CreatedAt": "2026-11-27T10:00:00Z", "Status": {"State": "pending"}}
    runner = runner_with(ran, never)
    assert runner.inspect("svc").exit_code == 124
    assert runner.unplaced("svc") is None


def test_a_task_failed_under_its_container_is_lost_not_a_success() -> None:
    """After an Engine restart Swarm says failed, "No such container", exit code 0."""
    gone = task("failed", Err="No such container: watcherd-x.1.abc",
                ContainerStatus={"ContainerID": "c1", "ExitCode": 0})  # fmt: skip
    found = runner_with(gone).inspect("svc")
    assert (found.finished, found.lost, found.exit_code) == (True, True, None)
    assert "No such container" in found.error


def test_a_task_whose_container_never_started_is_not_retried() -> None:
    refused = task("failed", Err="starting container failed: invalid mount config")
    found = runner_with(refused).inspect("svc")
    assert (found.finished, found.lost, found.exit_code) == (True, False, None)


def node(node_id: str, role: str = "worker", **labels: str) -> dict[str, Any]:
    return {
        "ID": node_id,
        "Spec": {"Role": role, "Labels": labels, "Availability": "active"},
        "Description": {"Hostname": f"host-{node_id}",
                        "Platform": {"OS": "linux", "Architecture": "x86_64"},
                        "Engine": {"Labels": {"zone": "a"}}},
        "Status": {"State": "down"},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("constraints", "takes"),
    [
        ((), True),
        (("node.role==worker",), True),
        (("node.role == Manager",), False),  # Swarm matches values without regard to case
        (("node.role!=worker",), False),
        (("node.labels.gpu==yes",), True),
        (("node.labels.gpu==no",), False),
        (("node.labels.ssd!=yes",), True),  # a label it lacks is != anything
        (("node.labels.ssd==yes",), False),
        (("engine.labels.zone==a", "node.platform.os==linux"), True),
        (("node.hostname==host-there",), True),
        (("node.id==other",), False),
        (("node.ip==10.0.0.0/8",), True),  # not read: counted as met (it could run there)
    ],
)
def test_which_nodes_a_pools_constraints_let_take_a_task(
    constraints: tuple[str, ...], takes: bool
) -> None:
    assert node_may_take(constraints, node("there", gpu="yes")) is takes


def test_a_task_only_this_node_can_take_is_kept_here_else_the_other_node_is_named() -> None:
    runner = runner_with()
    assert runner.placement(()).constraints == (f"node.id=={HERE}",)
    assert runner.placement(()).elsewhere == ""
    runner.docker._client.api.node_list.append(node(THERE, gpu="yes"))  # even while down
    assert runner.placement(()).elsewhere == f"host-{THERE}"
    assert runner.placement(("node.labels.gpu==yes",)).elsewhere == f"host-{THERE}"
    kept = runner.placement(("node.role==manager",))
    assert (kept.constraints, kept.elsewhere) == (("node.role==manager", f"node.id=={HERE}"), "")
