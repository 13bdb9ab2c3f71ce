"""The Swarm backend across two nodes (tests/support/swarmnodes.py: two more Engines in
network namespaces of their own, the worker with a relay): a job on the other node, its
model reached through that node's relay, its timeout there, and a node that dies under its
job. Slow (about two minutes): `pytest -m slow` runs these too."""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.git_server import GitServer
from tests.support.helpers import (
    DaemonProcess,
    StartDaemon,
    exit_record,
    files_holding,
    wait_finished,
    wait_for,
    write_job,
)
from tests.support.model_server import ScriptedModel, Step, codex_config
from tests.support.swarmnodes import RELAY_HOST, SOCKETS_DIR, TwoNodeSwarm
from watcherd.config import DEFAULT_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.slow]
POOLS = {"elsewhere": ["node.labels.watcherd-test==target"]}


@pytest.fixture
def swarm(tmp_path: Path, behave: str) -> Iterator[TwoNodeSwarm]:
    nodes = TwoNodeSwarm(tmp_path / "swarm").start([behave])
    yield nodes
    nodes.close()


@pytest.fixture
def backend() -> str:
    return "swarm"


def on_the_swarm(
    start_daemon: StartDaemon, swarm: TwoNodeSwarm, relay: bool = True, **config: Any
) -> DaemonProcess:
    """The daemon on the manager, and (unless not ``relay``) the worker's relay connected."""
    port = free_port(RELAY_HOST)
    daemon = start_daemon(
        docker_host=swarm.manager.url, pools=POOLS, rescan_seconds=2,
        relay={"listen": f"{RELAY_HOST}:{port}", "sockets_dir": str(SOCKETS_DIR)}, **config,
    )  # fmt: skip
    if relay:
        swarm.start_relay(port, daemon.root / "state" / "relay.pem")
        wait_for(lambda: "relays: " in daemon.log() and " connected" in daemon.log(), 30,
                 "the worker's relay connected")  # fmt: skip
    return daemon


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def starts_on(swarm: TwoNodeSwarm, root: Path, since: float) -> dict[str, int]:
    """Container starts of this work root, per node, since ``since``."""
    counts = {}
    for node in (swarm.manager, swarm.worker):
        with_label = {"event": "start", "label": f"watcherd.root={root}"}
        try:
            events = node.client.events(since=int(since), until=int(time.time()) + 1,
                                        decode=True, filters=with_label)  # fmt: skip
            counts[node.name] = len(list(events))
        except Exception:  # a crashed node tells nothing
            counts[node.name] = -1
    return counts


def test_a_job_runs_on_the_node_its_pool_names_and_its_results_come_back(
    work_root: Path, start_daemon: StartDaemon, swarm: TwoNodeSwarm, repo_url: str
) -> None:
    began = time.time()
    swarm.label(swarm.worker, **{"watcherd-test": "target"})
    on_the_swarm(start_daemon, swarm)
    write_job(work_root / "inbox", "there.yaml", repo_url=repo_url, prompt="succeed",
              pool="elsewhere")  # fmt: skip
    folder, path = wait_finished(work_root, "there.yaml", timeout=60)
    record = exit_record(work_root, path)
    assert (folder, record["exit_code"], record["attempts"]) == ("done", 0, 1), record["reason"]
    assert record["agent_version"] == "behave"  # its out/ came back through the filesystem
    assert starts_on(swarm, work_root, began) == {"mgr": 0, "wrk": 1}


def test_a_job_times_out_on_another_node(
    work_root: Path, start_daemon: StartDaemon, swarm: TwoNodeSwarm, repo_url: str
) -> None:
    swarm.label(swarm.worker, **{"watcherd-test": "target"})
    on_the_swarm(start_daemon, swarm)
    write_job(work_root / "inbox", "slow.yaml", repo_url=repo_url, prompt="hang",
              pool="elsewhere", timeout=3)  # fmt: skip
    folder, path = wait_finished(work_root, "slow.yaml", timeout=60)
    record = exit_record(work_root, path)
    assert (folder, record["state"]) == ("failed", "timeout")
    label = {"label": f"watcherd.root={work_root}"}
    wait_for(lambda: not swarm.manager.client.services.list(filters=label), 30, "service gone")
    # Swarm stops the task when its service goes.
    wait_for(
        lambda: not swarm.worker.client.containers.list(ignore_removed=True, filters=label),
        30,
        "task stopped",
    )


def test_a_job_whose_node_dies_runs_again_on_another(
    work_root: Path, start_daemon: StartDaemon, swarm: TwoNodeSwarm, repo_url: str
) -> None:
    began = time.time()
    swarm.label(swarm.worker, **{"watcherd-test": "target"})
    daemon = on_the_swarm(start_daemon, swarm)
    write_job(work_root / "inbox", "doomed.yaml", repo_url=repo_url,
              prompt="count-and-sleep 6", pool="elsewhere", retries=1)  # fmt: skip
    label = {"label": f"watcherd.root={work_root}"}
    wait_for(
        lambda: swarm.worker.client.containers.list(ignore_removed=True, filters=label),
        60,
        "running there",
    )
    swarm.label(swarm.manager, **{"watcherd-test": "target"})  # room for a second attempt
    swarm.worker.crash()
    folder, path = wait_finished(work_root, "doomed.yaml", timeout=90)
    record = exit_record(work_root, path)
    assert (folder, record["attempts"]) == ("done", 2), record["reason"]
    assert starts_on(swarm, work_root, began)["mgr"] == 1
    starts = (work_root / "out" / path.name.removesuffix(".yaml") / "starts").read_text()
    assert starts.count("start") == 1 and starts.count("end") == 1  # a fresh out/, one run
    assert "attempt 1 failed (the container was lost: its node" in daemon.log()


def test_an_engine_restart_under_a_job_runs_it_again_once(
    work_root: Path, start_daemon: StartDaemon, swarm: TwoNodeSwarm, repo_url: str
) -> None:
    """The manager's Engine (the daemon's) stops mid-job and comes back: the daemon waits
    for it, finds the service again, and runs the job once more within its attempts."""
    swarm.label(swarm.manager, **{"watcherd-test": "target"})
    daemon = on_the_swarm(start_daemon, swarm)
    write_job(work_root / "inbox", "restart.yaml", repo_url=repo_url,
              prompt="count-and-sleep 4", pool="elsewhere", retries=1)  # fmt: skip
    label = {"label": f"watcherd.root={work_root}"}
    wait_for(
        lambda: swarm.manager.client.containers.list(ignore_removed=True, filters=label),
        60,
        "running",
    )
    swarm.manager.restart(swarm.base / "dockerd-mgr.log", down_for=3)
    folder, path = wait_finished(work_root, "restart.yaml", timeout=120)
    record = exit_record(work_root, path)
    assert folder == "done", record["reason"]
    assert "Docker Engine unavailable" in daemon.log() or "unreachable" in daemon.log()
    out = work_root / "out" / path.name.removesuffix(".yaml")
    starts = (out / "starts").read_text()
    assert (starts.count("start"), starts.count("end")) == (1, 1)  # a fresh out/, one run
    assert record["attempts"] == 2  # the killed run counted: not taken for a success
    assert "the container was lost" in daemon.log()


@pytest.mark.codex
def test_a_job_on_another_node_reaches_its_model_through_that_nodes_relay_and_nothing_else(
    work_root: Path, start_daemon: StartDaemon, swarm: TwoNodeSwarm, git_server: GitServer,
    model: ScriptedModel, tmp_path: Path,
) -> None:  # fmt: skip
    """Real Codex on the worker, the scripted model on the daemon's side: every call goes
    task -> the worker's relay -> the daemon's gateway; from the task, neither the relay's
    channel nor either node's address answers."""
    began = time.time()
    TwoNodeSwarm.load(swarm.worker, [DEFAULT_IMAGE])
    swarm.label(swarm.worker, **{"watcherd-test": "target"})
    key = "sk-CANARY-" + secrets.token_hex(12)
    daemon = codex_on_the_swarm(start_daemon, swarm, model, tmp_path, key)
    port = daemon.config["relay"]["listen"].rsplit(":", 1)[1]
    targets = [f"{RELAY_HOST}/{port}", "10.213.0.3/2377", "10.213.0.2/2377", "127.0.0.1/2377"]
    probe = ("for t in " + " ".join(targets) + "; do if timeout 3 bash -c \"exec 3<>/dev/tcp/$t\""
             " 2>/dev/null; then echo \"$t open\"; else echo \"$t closed\"; fi; done"
             " > /work/out/reach.txt; ls /run/watcherd > /work/out/sockets.txt;"
             " cat /proc/*/environ /proc/*/cmdline > /work/out/procs.txt 2>/dev/null;"
             " grep -rIa sk-CANARY /run /tmp $HOME /work 2>/dev/null | head -c 4096"
             " > /work/out/found.txt; true")  # fmt: skip
    model.steps += [Step("tool", probe, {"yield_time_ms": 30000}), Step("message", "done")]
    write_job(work_root / "inbox", "model.yaml", repo_url=git_server.url("demo.git"),
              prompt="look around", pool="elsewhere", retries=0)  # fmt: skip
    folder, path = wait_finished(work_root, "model.yaml", timeout=150)
    out = work_root / "out" / path.name.removesuffix(".yaml")
    assert folder == "done", (out / "run.log").read_text()
    assert starts_on(swarm, work_root, began) == {"mgr": 0, "wrk": 1}
    reach = (out / "reach.txt").read_text().split("\n")
    assert [line for line in reach if line] == [f"{t} closed" for t in targets]
    assert (out / "sockets.txt").read_text().split() == ["egress.sock", "model.sock"]
    calls = [json.loads(line) for line in (out / "model-calls.jsonl").read_text().splitlines()]
    assert len(calls) >= 2 and all(c["status"] == 200 for c in calls), calls
    assert exit_record(work_root, path)["usage"]["input_tokens"] > 0  # the gateway's count
    assert model.authorizations and set(model.authorizations) == {f"Bearer {key}"}
    assert (out / "procs.txt").stat().st_size > 0  # it looked, and found no key:
    assert files_holding(work_root, key.encode()) == []
    job_id = out.name
    assert f"serving job {job_id}" in swarm.relay_log()
    wait_for(lambda: f"job {job_id} withdrawn" in swarm.relay_log(), 30, "withdrawn there")
    assert not (SOCKETS_DIR / job_id).exists()  # nor its link here


@pytest.mark.codex
def test_a_job_on_another_node_keeps_its_model_when_the_daemon_and_the_relay_restart(
    work_root: Path, start_daemon: StartDaemon, swarm: TwoNodeSwarm, git_server: GitServer,
    model: ScriptedModel, tmp_path: Path,
) -> None:  # fmt: skip
    """While the task runs on the worker, its relay is restarted and the daemon killed
    (-9) and started again: the task's mounted folder is kept (made anew, the task would
    never see it), and its next model call reaches the new daemon."""
    TwoNodeSwarm.load(swarm.worker, [DEFAULT_IMAGE])
    swarm.label(swarm.worker, **{"watcherd-test": "target"})
    daemon = codex_on_the_swarm(start_daemon, swarm, model, tmp_path)
    model.steps += [Step("tool", "sleep 15; echo slept > /work/out/slept.txt",
                         {"yield_time_ms": 60000}), Step("message", "done")]  # fmt: skip
    write_job(work_root / "inbox", "long.yaml", repo_url=git_server.url("demo.git"),
              prompt="wait", pool="elsewhere", retries=0)  # fmt: skip
    wait_for(lambda: len(model.requests) >= 1, 90, "the first model call, from the worker")
    port = int(daemon.config["relay"]["listen"].rsplit(":", 1)[1])
    swarm.stop_relay()
    swarm.start_relay(port, work_root / "state" / "relay.pem")
    daemon.kill()
    daemon.start(wait_ready=False)
    folder, path = wait_finished(work_root, "long.yaml", timeout=150)
    out = work_root / "out" / path.name.removesuffix(".yaml")
    assert folder == "done", (out / "run.log").read_text()
    assert exit_record(work_root, path)["attempts"] == 1  # the same run, adopted
    assert (out / "slept.txt").read_text().strip() == "slept"
    assert len(model.requests) >= 2  # the call after the sleep reached the model
    calls = [json.loads(line) for line in (out / "model-calls.jsonl").read_text().splitlines()]
    assert calls[-1]["status"] == 200, calls


def codex_on_the_swarm(
    start_daemon: StartDaemon, swarm: TwoNodeSwarm, model: ScriptedModel, tmp_path: Path,
    key: str = "test-key",
) -> DaemonProcess:  # fmt: skip
    auth = tmp_path / "auth"
    auth.mkdir()
    (auth / "config.toml").write_text(codex_config(model.base_url))
    return on_the_swarm(
        start_daemon, swarm, image=DEFAULT_IMAGE, auth_mode="login", auth_dirs=[str(auth)],
        allowed_protocols=["git"], extra_env={"SCRIPTED_API_KEY": key}, default_timeout=120,
    )  # fmt: skip


def test_a_node_without_a_relay_refuses_the_task_and_says_why(
    work_root: Path, start_daemon: StartDaemon, swarm: TwoNodeSwarm, repo_url: str
) -> None:
    swarm.label(swarm.worker, **{"watcherd-test": "target"})
    on_the_swarm(start_daemon, swarm, relay=False)
    write_job(work_root / "inbox", "alone.yaml", repo_url=repo_url, prompt="succeed",
              pool="elsewhere", retries=0)  # fmt: skip
    folder, path = wait_finished(work_root, "alone.yaml", timeout=60)
    record = exit_record(work_root, path)
    assert folder == "failed"
    assert "watcherd relay" in record["reason"], record["reason"]
