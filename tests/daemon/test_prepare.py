"""Preparing ahead on a real Engine: while every slot is busy the next job is claimed and
made ready (its container created, not started; no attempt counted), it starts only when a
slot frees, a cancel files it without running it, and a kill -9 while it waits starts it
once, on both backends."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.backends import on_both_backends
from tests.support.helpers import (
    DaemonProcess,
    StartDaemon,
    cli,
    cli_environ,
    exit_record,
    wait_finished,
    wait_for,
    write_job,
)
from watcherd.spool.folders import Layout, read_run_state
from watcherd.spool.lookup import Place, resolve

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def job(root: Path, name: str, prompt: str, repo_url: str) -> None:
    write_job(root / "inbox", name, repo_url=repo_url, prompt=prompt)


def job_id_of(root: Path, name: str, *, started: bool) -> str:
    """The id of ``name`` once claimed and, with ``started``, once its worker has begun
    (its progress file); without, once it is prepared."""

    def find() -> str | None:
        ref = resolve(Layout(root), name)
        if ref is None or ref.job_id is None or ref.place is not Place.RUNNING:
            return None
        if started:
            return ref.job_id if (root / "out" / ref.job_id / "progress").exists() else None
        return ref.job_id if read_run_state(Layout(root), ref.job_id).prepared else None

    return wait_for(find, 90, f"{name} {'running' if started else 'prepared'}")


def containers(client: docker.DockerClient, root: Path, job_id: str) -> list[Any]:
    label = [f"watcherd.root={root}", f"watcherd.job={job_id}"]
    found = client.containers.list(all=True, ignore_removed=True, filters={"label": label})
    if (client.info().get("Swarm") or {}).get("ControlAvailable"):
        found += client.services.list(filters={"label": f"watcherd.job={job_id}"})
    return found


def status(daemon: DaemonProcess) -> dict[str, Any]:
    done = subprocess.run(
        cli(daemon, "status", "--json"), capture_output=True, text=True, env=cli_environ(),
        timeout=60, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def cancel(daemon: DaemonProcess, job_id: str) -> None:
    subprocess.run(
        cli(daemon, "cancel", job_id), capture_output=True, env=cli_environ(), timeout=120,
        check=True,
    )  # fmt: skip


def one_busy_one_prepared(
    root: Path, start_daemon: StartDaemon, repo_url: str, *more: str
) -> tuple[DaemonProcess, str, str]:
    """A daemon with one slot, busy with first.yaml (it hangs), and second.yaml prepared
    (``more`` dropped with it); the daemon and the two ids."""
    daemon = start_daemon(concurrency=1, prepare_ahead=1)
    job(root, "first.yaml", "work-then-hang", repo_url)
    first = job_id_of(root, "first.yaml", started=True)
    for name in ("second.yaml", *more):
        job(root, name, "succeed", repo_url)
    return daemon, first, job_id_of(root, "second.yaml", started=False)


def assert_made_not_started(
    client: docker.DockerClient, root: Path, job_id: str, backend: str
) -> None:
    if backend == "local":  # created (just after its record says prepared), never started
        made = wait_for(lambda: containers(client, root, job_id), 30, "its container made")
        assert [c.status for c in made] == ["created"]
        assert made[0].attrs["State"]["StartedAt"].startswith("0001-")
    else:  # a Swarm service is scheduled once it exists: only made when a slot frees
        assert containers(client, root, job_id) == []


@on_both_backends
def test_the_next_job_is_prepared_while_the_slot_is_busy_and_started_when_it_frees(
    work_root: Path, start_daemon: StartDaemon, repo_url: str, backend: str,
    docker_client: docker.DockerClient,
) -> None:  # fmt: skip
    daemon, first, second = one_busy_one_prepared(work_root, start_daemon, repo_url, "third.yaml")
    # Claimed in the same turn as the second, had there been room: one ahead, no more.
    assert (work_root / "inbox" / "third.yaml").exists()
    state = read_run_state(Layout(work_root), second)
    assert state.attempts == 0 and state.commit_before and state.gateway_token
    assert (work_root / "workspaces" / second / ".git").exists()  # its workspace is ready
    assert not (work_root / "out" / second / "run.log").exists()  # its worker never began
    assert_made_not_started(docker_client, work_root, second, backend)
    listed = {j["job_id"]: j for j in status(daemon)["running"]}
    assert listed[second]["prepared"] is True and listed[first]["prepared"] is False
    shown = subprocess.run(
        cli(daemon, "show", second), capture_output=True, text=True, env=cli_environ(),
        timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "prepared: made ready while every slot was busy" in shown

    cancel(daemon, first)  # the slot frees: the prepared job starts, then the third
    for name in ("second.yaml", "third.yaml"):
        folder, path = wait_finished(work_root, name, timeout=90)
        record = exit_record(work_root, path)
        assert (folder, record["state"], record["attempts"]) == ("done", "done", 1)


@on_both_backends
def test_a_prepared_job_cancelled_is_filed_without_running(
    work_root: Path, start_daemon: StartDaemon, repo_url: str, backend: str,
    docker_client: docker.DockerClient,
) -> None:  # fmt: skip
    daemon, blocker, waiting = one_busy_one_prepared(work_root, start_daemon, repo_url)
    cancel(daemon, waiting)
    folder, path = wait_finished(work_root, "second.yaml")
    record = exit_record(work_root, path)
    assert (folder, record["state"], record["attempts"]) == ("failed", "cancelled", 0)
    assert not (work_root / "out" / waiting / "run.log").exists()  # never ran
    wait_for(lambda: not containers(docker_client, work_root, waiting), 30, "container gone")
    assert (work_root / "running" / f"{blocker}.yaml").exists()  # the other runs on
    cancel(daemon, blocker)


@on_both_backends
def test_kill_9_while_a_job_waits_prepared_starts_it_once_after_the_restart(
    work_root: Path, start_daemon: StartDaemon, repo_url: str, backend: str,
    docker_client: docker.DockerClient,
) -> None:  # fmt: skip
    daemon, first, second = one_busy_one_prepared(work_root, start_daemon, repo_url)
    assert_made_not_started(docker_client, work_root, second, backend)
    daemon.kill()
    # The new daemon adopts the running job (its slot) and queues the prepared one first:
    # with one slot, it must not start until the first ends.
    again = start_daemon(concurrency=1, prepare_ahead=1)
    queued = "prepared, not started; queued first" if backend == "local" else "no container"
    wait_for(lambda: f"taking over job {second}: {queued}" in again.log(), 30, "adoption")
    assert read_run_state(Layout(work_root), second).attempts == 0
    assert_made_not_started(docker_client, work_root, second, backend)
    cancel(again, first)
    folder, path = wait_finished(work_root, "second.yaml", timeout=90)
    record = exit_record(work_root, path)
    assert (folder, record["state"], record["attempts"]) == ("done", "done", 1)


@on_both_backends
def test_never_more_containers_running_than_the_concurrency(
    work_root: Path, start_daemon: StartDaemon, repo_url: str
) -> None:
    # Prepared jobs wait, and a slot is handed on when a container exits (before its job is
    # filed): neither may let a third container run beside two.
    start_daemon(concurrency=2, prepare_ahead=3)
    names = [f"c{n}.yaml" for n in range(8)]
    for name in names:
        write_job(work_root / "inbox", name, repo_url=repo_url, prompt="count-and-sleep 0.4",
                  repo_dir=name.removesuffix(".yaml"))  # fmt: skip
    edges: list[tuple[int, int]] = []
    for name in names:
        folder, path = wait_finished(work_root, name, timeout=120)
        assert folder == "done"
        marks = work_root / "out" / exit_record(work_root, path)["job_id"] / "starts"
        (start, end) = (int(line.split()[1]) for line in marks.read_text().splitlines())
        edges += [(start, 1), (end, -1)]
    running = most = 0
    for _, step in sorted(edges):  # an end before a start at the same instant
        running += step
        most = max(most, running)
    assert most == 2
