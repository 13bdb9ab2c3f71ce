"""Publishing through a real daemon: jobs run by the stand-in worker image (its ``bundle``
behaviour leaves the commits a test made as the job's branch), published by the daemon to
a git server over HTTP and a scripted GitHub API on 127.0.0.1.

The token is in no job container (any process's arguments or environment, the container's
spec), in no file under the root and in no log; publishing twice pushes once and finds the
one pull request; a hostile job's attempts (a workflow, a branch named main, rewritten
history) are refused with the job still done and nothing pushed."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

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
from tests.support.publishing import REPO, World, files_holding, git, make_world
from tests.support.webhook import Receiver

pytestmark = pytest.mark.docker


@pytest.fixture
def world(work_root: Path, tmp_path: Path) -> Iterator[World]:
    made = make_world(tmp_path)  # its root is work_root: the daemon's
    assert made.root == work_root
    yield made
    made.close()


def start(start_daemon: StartDaemon, world: World, **overrides: Any) -> DaemonProcess:
    data = world.config_data()
    return start_daemon(allowed_protocols=data["allowed_protocols"], publish=data["publish"],
                        **overrides)  # fmt: skip


def bundle(world: World, branch: str, changes: dict[str, str], orphan: bool = False) -> str:
    """The agent's work as the worker would leave it: ``branch`` with one commit of
    ``changes`` on main (or on no history at all), bundled, base64."""
    work = world.tmp / f"agent-{branch.replace('/', '-')}"
    git("clone", "-q", str(world.upstream), str(work))
    git("checkout", "-q", "--orphan" if orphan else "-B", branch, cwd=work)
    for path, content in changes.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(content)
        git("add", path, cwd=work)
    git("-c", "user.name=agent", "-c", "user.email=agent@example.invalid", "commit", "-qm",
        "agent's change", cwd=work)  # fmt: skip
    target = work.with_suffix(".bundle")
    git(
        "bundle",
        "create",
        "-q",
        str(target),
        branch,
        *([] if orphan else ["^origin/main"]),
        cwd=work,
    )
    return base64.b64encode(target.read_bytes()).decode()


def published(root: Path, job_file: Path) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        publish = exit_record(root, job_file).get("publish")
        return publish if publish and publish.get("state") != "pending" else None

    found: dict[str, Any] = wait_for(final, 60, f"{job_file.name} published")
    return found


def job_processes(client: docker.DockerClient, root: Path) -> list[tuple[str, bytes, bytes]]:
    """(container, argv, environ) of every process in every running job container of
    this root, read from the host's /proc."""
    found = []
    for container in client.containers.list(filters={"label": f"watcherd.root={root}"}):
        top = container.top(ps_args="-eo pid")
        for (pid,) in top["Processes"]:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes()
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            found.append((container.name, argv, environ))
    return found


def test_a_job_is_published_once_and_its_token_never_reaches_a_job(
    world: World, work_root: Path, start_daemon: StartDaemon, docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:  # fmt: skip
    secret = tmp_path / "hook.secret"
    secret.write_text("hook-s3cret\n")
    secret.chmod(0o600)
    receiver = Receiver()
    daemon = start(start_daemon, world, notify_default=["hook"],
                   notify={"hook": {"url": receiver.url, "secret_file": str(secret)}})  # fmt: skip
    inbox = work_root / "inbox"
    # A job that runs all along: its container must never see the token.
    write_job(inbox, "busy.yaml", repo_url=world.repo_url, prompt="sleep 60", timeout=90)
    work = bundle(world, "fix-readme", {"README.md": "# widgets\n"})
    write_job(inbox, "fix.yaml", repo_url=world.repo_url, prompt="bundle", branch="fix-readme",
              publish="draft", env={"SUMMARY": "Fix the README", "BUNDLE_B64": work})  # fmt: skip
    folder, job_file = wait_finished(work_root, "fix.yaml", 120)
    assert folder == "done"
    outcome = published(work_root, job_file)
    assert outcome["state"] == "published", outcome
    assert outcome["branch"] == "watcherd/fix-readme" and outcome["by"] == "job"
    assert world.remote_branch("watcherd/fix-readme") == outcome["commit"]
    assert exit_record(work_root, job_file)["state"] == "done"
    [pull] = world.api.open_pulls(REPO)
    assert pull["title"] == "Fix the README" and pull["draft"] is True
    assert pull["head"]["ref"] == "watcherd/fix-readme" and pull["base"]["ref"] == "main"

    # The running job's processes and its container's spec hold no token.
    processes = job_processes(docker_client, work_root)
    assert processes, "the busy job is not running"
    token = world.token.encode()
    assert [p for p in processes if token in p[1] or token in p[2]] == []
    mine = {"label": f"watcherd.root={work_root}"}
    for container in docker_client.containers.list(all=True, filters=mine):
        assert world.token not in json.dumps(container.attrs)

    # Publishing again (the CLI, through the daemon): no push, the same pull request.
    run = subprocess.run(cli(daemon, "publish", "fix", "--timeout", "60"), capture_output=True,
                         text=True, env=cli_environ(), timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    again = json.loads(run.stdout)
    assert again["url"] == outcome["url"] and again["pushed"] is False
    assert world.git.pushes == 1 and len(world.api.pulls[REPO]) == 1
    show = subprocess.run(cli(daemon, "show", "fix"), capture_output=True, text=True,
                          env=cli_environ(), timeout=60)  # fmt: skip
    assert f"publish:    published (draft): {outcome['url']}" in show.stdout

    # A job run after the daemon has read the token: not in its environment either.
    write_job(inbox, "env.yaml", repo_url=world.repo_url, prompt="env")
    _, env_job = wait_finished(work_root, "env.yaml", 120)
    env_txt = work_root / "out" / env_job.name.removesuffix(".yaml") / "env.txt"
    assert "BUNDLE" not in env_txt.read_text() and world.token not in env_txt.read_text()

    # Nowhere under the root, nowhere in the daemon's log.
    assert files_holding(work_root, world.token) == []
    assert world.token not in daemon.log()

    # Told: job.finished when the job was filed, then job.published with the outcome.
    def told(event: str) -> list[dict[str, Any]]:
        return [json.loads(body) for _, headers, body in list(receiver.requests)
                if headers.get("X-Watcherd-Event") == event]  # fmt: skip

    wait_for(lambda: len(told("job.published")) >= 2, 30, "job.published, twice")
    first = told("job.published")[0]
    assert first["job_id"] == job_file.name.removesuffix(".yaml")
    assert first["publish"]["state"] == "published" and first["publish"]["url"] == outcome["url"]
    assert all(world.token.encode() not in body for _, _, body in receiver.requests)
    receiver.stop()


def test_a_hostile_jobs_attempts_are_refused_and_the_jobs_stay_done(
    world: World, work_root: Path, start_daemon: StartDaemon
) -> None:
    start(start_daemon, world)
    inbox = work_root / "inbox"
    workflow = bundle(world, "ci", {".github/workflows/steal.yml": "on: push\n"})
    overwrite = bundle(world, "main", {"README.md": "mine now\n"})
    rewritten = bundle(world, "rewrite", {"README.md": "history, rewritten\n"}, orphan=True)
    attempts: dict[str, dict[str, Any]] = {
        "workflow.yaml": {"branch": "ci", "env": {"BUNDLE_B64": workflow}},
        "main.yaml": {"branch": "main", "publish": "ready", "env": {"BUNDLE_B64": overwrite}},
        "rewrite.yaml": {"branch": "rewrite", "env": {"BUNDLE_B64": rewritten}},
    }
    main_before = world.remote_branch("main")
    for name, fields in attempts.items():
        write_job(inbox, name, repo_url=world.repo_url, prompt="bundle",
                  **{"publish": "draft", **fields})  # fmt: skip
    reasons = {}
    for name in attempts:
        folder, job_file = wait_finished(work_root, name, 120)
        assert folder == "done", name
        outcome = published(work_root, job_file)
        assert outcome["state"] == "refused", (name, outcome)
        assert exit_record(work_root, job_file)["state"] == "done"
        reasons[name] = outcome["reason"]
    assert ".github/workflows/steal.yml" in reasons["workflow.yaml"]
    assert "'main' is" in reasons["main.yaml"]
    assert "does not descend from commit_before" in reasons["rewrite.yaml"]
    assert world.git.pushes == 0 and world.git.refused_pushes == 0
    assert world.api.pulls[REPO] == []
    assert world.remote_branch("main") == main_before
