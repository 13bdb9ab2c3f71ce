"""Cancel on a real Engine: a queued job never runs, a running job's container is stopped
and really gone with its work so far on its branch, whichever daemon owns it, across a
restart, on both backends."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.backends import on_both_backends
from tests.support.git_server import GitServer
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
from tests.support.model_server import ScriptedModel, Step
from watcherd.spool.folders import Layout
from watcherd.spool.lookup import Place, resolve
from watcherd.spool.waiting import WaitExit

pytestmark = [pytest.mark.docker, pytest.mark.slow]
URL = ""


@pytest.fixture(autouse=True)
def use_local_repo(repo_url: str) -> None:
    global URL
    URL = repo_url


def job(inbox: Path, name: str, prompt: str, **fields: Any) -> Path:
    return write_job(inbox, name, repo_url=URL, prompt=prompt, **fields)


def running_id(root: Path, name: str) -> str:
    """The id of the job dropped as ``name`` once its worker has begun (its progress file)."""

    def find() -> str | None:
        ref = resolve(Layout(root), name)
        if ref is None or ref.job_id is None or ref.place is not Place.RUNNING:
            return None
        return ref.job_id if (root / "out" / ref.job_id / "progress").exists() else None

    return wait_for(find, 60, f"{name} running")


def cancel(daemon: DaemonProcess, query: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(daemon, "cancel", query, *flags),
        capture_output=True, text=True, env=cli_environ(), timeout=180,
    )  # fmt: skip


def containers_of(client: docker.DockerClient, root: Path, job_id: str) -> list[Any]:
    label = {"label": [f"watcherd.root={root}", f"watcherd.job={job_id}"]}
    found = client.containers.list(all=True, ignore_removed=True, filters=label)
    if (client.info().get("Swarm") or {}).get("ControlAvailable"):
        found += client.services.list(filters={"label": f"watcherd.job={job_id}"})
    return found


@on_both_backends
def test_a_running_job_is_stopped_its_work_kept_and_its_container_gone(
    work_root: Path, start_daemon: StartDaemon, docker_client: docker.DockerClient
) -> None:
    daemon = start_daemon()
    job(work_root / "inbox", "long.yaml", "work-then-hang")
    job_id = running_id(work_root, "long.yaml")
    done = cancel(daemon, job_id)
    assert done.returncode == 0, done.stderr
    folder, path = wait_finished(work_root, "long.yaml")
    record = exit_record(work_root, path)
    assert folder == "failed"
    assert record["state"] == "cancelled"
    assert record["cancelled_by"].endswith("(cli)")
    assert "cancelled by" in record["reason"]
    assert record["branch"] == f"watcherd/{job_id}" and record["commit_before"]  # saved as any
    wait_for(lambda: not containers_of(docker_client, work_root, job_id), 30, "container gone")
    assert not list((work_root / "cancel").glob("*.json"))  # the request is done with
    # Asking again is idempotent, and says the job was cancelled.
    again = cancel(daemon, job_id)
    assert again.returncode == 0 and "already ended (cancelled)" in again.stderr


def test_a_queued_job_is_filed_cancelled_and_never_runs(
    work_root: Path, start_daemon: StartDaemon
) -> None:
    daemon = start_daemon(concurrency=1, prepare_ahead=0)  # queued: not prepared ahead
    inbox = work_root / "inbox"
    job(inbox, "blocker.yaml", "work-then-hang")
    blocker = running_id(work_root, "blocker.yaml")
    job(inbox, "queued.yaml", "succeed")
    done = cancel(daemon, "queued")
    assert done.returncode == 0, done.stderr
    folder, path = wait_finished(work_root, "queued.yaml")
    record = exit_record(work_root, path)
    assert (folder, record["state"]) == ("failed", "cancelled")
    assert record["attempts"] == 0
    assert not (work_root / "out" / record["job_id"] / "summary.md").exists()  # never ran
    assert (work_root / "running" / f"{blocker}.yaml").exists()  # the other one runs on
    # wait exits with the code for cancelled
    waited = subprocess.run(
        cli(daemon, "wait", "queued"),
        capture_output=True, text=True, env=cli_environ(), timeout=60,
    )  # fmt: skip
    assert waited.returncode == WaitExit.CANCELLED
    # A job that ended otherwise is never cancelled.
    job(inbox, "fine.yaml", "succeed")
    assert cancel(daemon, blocker, "--no-wait").returncode == 0
    folder, path = wait_finished(work_root, "fine.yaml")
    assert folder == "done"
    late = cancel(daemon, "fine")
    assert late.returncode == 1 and "already ended (done)" in late.stderr
    assert exit_record(work_root, path)["state"] == "done"


def test_another_daemons_job_and_a_request_made_while_no_daemon_runs(
    work_root: Path, start_daemon: StartDaemon, docker_client: docker.DockerClient
) -> None:
    first = start_daemon(concurrency=1)
    second = start_daemon(concurrency=1)
    inbox = work_root / "inbox"
    job(inbox, "a.yaml", "work-then-hang")
    job(inbox, "b.yaml", "work-then-hang")
    a, b = running_id(work_root, "a.yaml"), running_id(work_root, "b.yaml")
    # Two daemons, one job each: a cancel through either's config reaches the right one.
    assert cancel(first, a).returncode == 0
    assert cancel(second, b, "--no-wait").returncode == 0
    for name in ("a.yaml", "b.yaml"):
        folder, path = wait_finished(work_root, name)
        assert exit_record(work_root, path)["state"] == "cancelled"
    # Across a restart: both daemons stop (the container runs on), the request is made
    # with no daemon running, and the daemon that adopts the job acts on it.
    job(inbox, "c.yaml", "work-then-hang")
    c = running_id(work_root, "c.yaml")
    first.stop()
    second.stop()
    assert containers_of(docker_client, work_root, c)
    asked = cancel(first, c, "--no-wait")
    assert asked.returncode == 0 and "cancel requested" in asked.stderr
    start_daemon(concurrency=1)
    folder, path = wait_finished(work_root, "c.yaml", timeout=90)
    record = exit_record(work_root, path)
    assert (folder, record["state"]) == ("failed", "cancelled")
    wait_for(lambda: not containers_of(docker_client, work_root, c), 30, "container gone")


def test_an_unknown_job_and_logs_follow_exit_code(
    work_root: Path, start_daemon: StartDaemon
) -> None:
    daemon = start_daemon()
    missing = cancel(daemon, "no-such-job")
    assert missing.returncode == WaitExit.UNKNOWN and "no job" in missing.stderr
    job(work_root / "inbox", "follow.yaml", "work-then-hang")
    job_id = running_id(work_root, "follow.yaml")
    follower = subprocess.Popen(
        cli(daemon, "logs", "-f", job_id), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=cli_environ(),
    )  # fmt: skip
    assert cancel(daemon, job_id).returncode == 0
    assert follower.wait(timeout=60) == WaitExit.CANCELLED


@pytest.mark.codex
def test_real_codex_cancelled_mid_command_keeps_its_work_on_its_branch(
    work_root: Path, codex_daemon: Callable[..., DaemonProcess], model: ScriptedModel,
    git_server: GitServer, docker_client: docker.DockerClient,
) -> None:  # fmt: skip
    model.steps += [
        Step("tool", "echo half done > PART.md && sleep 300"),
        Step("message", "Finished."),
    ]
    daemon = codex_daemon()
    write_job(work_root / "inbox", "slow.yaml", repo_url=git_server.url("demo.git"),
              prompt="add PART.md slowly")  # fmt: skip

    def command_began() -> str | None:
        ref = resolve(Layout(work_root), "slow.yaml")
        if ref is None or ref.job_id is None:
            return None
        events = work_root / "out" / ref.job_id / "events.jsonl"
        return ref.job_id if events.exists() and "PART.md" in events.read_text() else None

    job_id = wait_for(command_began, 120, "the agent's command running")
    done = cancel(daemon, job_id)
    assert done.returncode == 0, done.stderr
    folder, path = wait_finished(work_root, "slow.yaml", timeout=60)
    record = exit_record(work_root, path)
    assert (folder, record["state"]) == ("failed", "cancelled")
    assert len(record["commits"]) == 1  # the work so far, committed on its branch
    shown = subprocess.run(
        ["git", "--git-dir", record["results_repo"], "show", f"{record['branch']}:PART.md"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shown.stdout == "half done\n"
    assert "+half done" in (work_root / "out" / job_id / "changes.patch").read_text()
    assert len(model.requests) == 1  # stopped before the model was asked again
    wait_for(lambda: not containers_of(docker_client, work_root, job_id), 30, "container gone")
