"""The real worker image with the real Codex CLI, against a scripted model on loopback."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from tests.support.backends import on_both_backends
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
from watcherd.config import DEFAULT_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.codex]


def owners(folder: Path) -> set[tuple[int, int]]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            found.add((st.st_uid, st.st_gid))
    return found


def git(repo: str | Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def test_agent_edits_the_repo_and_outputs_are_complete(
    work_root: Path, codex_daemon: Callable[..., DaemonProcess], model: ScriptedModel,
    git_server: GitServer,
) -> None:  # fmt: skip
    model.steps += [Step("tool", "echo hello > NEW.md"), Step("message", "Added NEW.md for you.")]
    codex_daemon(job_user="1234:1234")
    write_job(
        work_root / "inbox", "edit.yaml", repo_url=git_server.url("demo.git"), prompt="add NEW.md"
    )
    folder, path = wait_finished(work_root, "edit.yaml", timeout=120)
    out = work_root / "out" / path.name.removesuffix(".yaml")
    record = exit_record(work_root, path)
    assert folder == "done", (record, (out / "run.log").read_text())
    # The change is a commit on the job's branch in the results repository, and a patch.
    job_id = path.name.removesuffix(".yaml")
    assert record["branch"] == f"watcherd/{job_id}"
    assert len(record["commits"]) == 1 and record["commit_after"] == record["commits"][0]
    results = record["results_repo"]
    assert git(results, "show", f"{record['branch']}:NEW.md") == "hello\n"
    assert "+hello" in (out / "changes.patch").read_text()
    summary = (out / "summary.md").read_text()
    assert "Added NEW.md for you." in summary
    assert "NEW.md" in summary.split("## Files changed", 1)[1]
    assert record["agent"] == "codex" and record["session_id"]
    assert record["usage"]["output_tokens"] >= 7
    assert record["agent_version"] == "0.171.0"
    assert (out / "events.jsonl").read_text().strip()
    assert (out / "sessions").is_dir()  # the transcript belongs to the job
    assert owners(out) == {(1234, 1234)}  # no root-owned file left behind
    # The tool output went back to the model: Codex really ran the command.
    assert any("function_call_output" in json.dumps(r.get("input", "")) for r in model.requests)

    # Same repository, another ref: a fresh workspace, nothing of the first job in it.
    model.steps += [Step("tool", "ls -a > /work/out/ls.txt"), Step("message", "Looked.")]
    write_job(work_root / "inbox", "again.yaml", repo_url=git_server.url("demo.git"),
              prompt="look", repo_ref="feature")  # fmt: skip
    folder, path = wait_finished(work_root, "again.yaml", timeout=120)
    out = work_root / "out" / path.name.removesuffix(".yaml")
    assert folder == "done", (out / "run.log").read_text()
    listing = (out / "ls.txt").read_text().split()
    assert "FEATURE.md" in listing and "NEW.md" not in listing
    record = exit_record(work_root, path)
    assert record["repo_ref"] == "feature" and record["commits"] == []
    assert (out / "changes.patch").read_text() == ""


def test_model_failure_fails_the_job_with_reason(
    work_root: Path, codex_daemon: Callable[..., DaemonProcess], model: ScriptedModel,
    git_server: GitServer,
) -> None:  # fmt: skip
    model.steps += [Step("fail", "the scripted model refuses")]
    codex_daemon()
    write_job(work_root / "inbox", "fail.yaml", repo_url=git_server.url("demo.git"), prompt="x",
              retries=0)  # fmt: skip
    folder, path = wait_finished(work_root, "fail.yaml", timeout=120)
    record = exit_record(work_root, path)
    summary = (work_root / "out" / path.name.removesuffix(".yaml") / "summary.md").read_text()
    assert (folder, record["state"]) == ("failed", "failed")
    assert "codex exited with code 1" in record["reason"]
    assert "codex exited with code 1" in summary


def test_unreachable_repo_is_transient_and_retried(
    work_root: Path, codex_daemon: Callable[..., DaemonProcess]
) -> None:
    codex_daemon(backoff_initial=0.1)
    write_job(work_root / "inbox", "gone.yaml", repo_url="git://127.0.0.1:1/nothing.git",
              prompt="x", retries=1)  # fmt: skip
    folder, path = wait_finished(work_root, "gone.yaml", timeout=120)
    record = exit_record(work_root, path)
    assert (folder, record["attempts"]) == ("failed", 2)
    assert "network failure while fetching" in record["reason"]


def test_bad_ref_is_a_clear_permanent_failure(
    work_root: Path, codex_daemon: Callable[..., DaemonProcess], git_server: GitServer
) -> None:
    codex_daemon()
    write_job(work_root / "inbox", "ref.yaml", repo_url=git_server.url("demo.git"), prompt="x",
              repo_ref="no-such-branch")  # fmt: skip
    folder, path = wait_finished(work_root, "ref.yaml", timeout=120)
    record = exit_record(work_root, path)
    assert (folder, record["attempts"], record["exit_code"]) == ("failed", 1, None)
    assert "ref 'no-such-branch' not found" in record["reason"]


@pytest.mark.parametrize(
    ("env", "reason"),
    [({"PROMPT": "x"}, "REPO_URL is required"), ({"REPO_URL": "x"}, "PROMPT is required")],
)
def test_one_shot_docker_run_validates_inputs(
    docker_client: docker.DockerClient, tmp_path: Path, env: dict[str, str], reason: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, 1000, 1000)
    container = docker_client.containers.run(
        DEFAULT_IMAGE, environment=env, network_mode="none", detach=True,
        volumes={str(out): {"bind": "/work/out", "mode": "rw"}},
    )  # fmt: skip
    try:
        assert container.wait(timeout=60)["StatusCode"] == 64
    finally:
        container.remove(force=True)
    record = json.loads((out / "exit.json").read_text())
    assert reason in record["reason"]
    assert record["state"] == "failed"


def test_one_shot_docker_run_as_in_the_readme(
    docker_client: docker.DockerClient, tmp_path: Path, model: ScriptedModel, git_server: GitServer
) -> None:
    model.steps += [Step("message", "One-shot works.")]
    out, auth = tmp_path / "out", tmp_path / "auth"
    out.mkdir()
    auth.mkdir()
    (auth / "config.toml").write_text(codex_config(model.base_url))
    for folder in (out, auth, tmp_path):
        os.chown(folder, 4321, 4321)
    container = docker_client.containers.run(
        DEFAULT_IMAGE, user="4321:4321", network_mode="host", detach=True,
        environment={"REPO_URL": git_server.url("demo.git"), "PROMPT": "hello",
                     "GIT_ALLOW_PROTOCOL": "git", "SCRIPTED_API_KEY": "k"},
        volumes={str(out): {"bind": "/work/out", "mode": "rw"},
                 str(auth): {"bind": "/home/codex/.codex", "mode": "rw"}},
    )  # fmt: skip
    try:
        code = container.wait(timeout=120)["StatusCode"]
    finally:
        logs = container.logs().decode(errors="replace")
        container.remove(force=True)
    assert code == 0, logs
    assert "One-shot works." in (out / "summary.md").read_text()
    assert json.loads((out / "exit.json").read_text())["state"] == "done"


SECRET = "sk-watcherd-test-secret-4f1c9a"


@on_both_backends
def test_hostile_agent_is_contained(
    work_root: Path, start_daemon: StartDaemon, model: ScriptedModel, git_server: GitServer,
    tmp_path: Path, docker_client: docker.DockerClient, backend: str,
) -> None:  # fmt: skip
    key_file = tmp_path / "secrets.env"
    key_file.write_text(f"CODEX_API_KEY={SECRET}\n")
    key_file.chmod(0o600)
    other = work_root / "out" / "other-job"
    other.mkdir(parents=True)
    (other / "private.txt").write_text("other job's output")
    attempts = "; ".join([
        "cat /proc/*/environ /proc/*/cmdline > /work/out/procs.txt 2>&1",
        "grep -rals --devices=skip -e '" + SECRET[:8] + "''" + SECRET[8:] + "' / "
        "--exclude-dir=proc --exclude-dir=sys > /work/out/found.txt",
        "touch /work/inbox/pwn.yaml", "touch ../inbox/pwn.yaml",
        "cat /work/out/../other-job/private.txt",
        "ls /work", "touch /etc/pwned", "touch /usr/local/bin/pwned", "touch /opt/codex/pwned",
        "echo \"key=$CODEX_API_KEY\" > /work/out/leak.txt", "env > /work/out/env.txt",
        "id > /work/out/id.txt", "sudo -n id", "su -c id </dev/null",
        "find / -xdev -perm -4000 -type f 2>/dev/null > /work/out/setuid.txt",
    ])  # fmt: skip
    model.steps += [
        Step("tool", "sleep 2"),  # while the test reads the container's (and service's) spec
        Step("tool", attempts + "; true"),
        Step("message", "tried everything"),
    ]
    # The operator's provider, in Codex's own config (its key variable: the api_key_file's).
    config_dir = work_root / ".codex-bot"
    config_dir.mkdir(mode=0o700)
    (config_dir / "config.toml").write_text(
        codex_config(model.base_url).replace('"SCRIPTED_API_KEY"', '"CODEX_API_KEY"')
    )
    start_daemon(
        image=DEFAULT_IMAGE, auth_mode="api_key", api_key_file=str(key_file),
        allowed_protocols=["git"], default_timeout=120,
    )  # fmt: skip
    write_job(work_root / "inbox", "hostile.yaml", repo_url=git_server.url("demo.git"),
              prompt="be evil", model="scripted-model")  # fmt: skip
    label = {"label": f"watcherd.root={work_root}"}
    container = wait_for(
        lambda: docker_client.containers.list(ignore_removed=True, filters=label), 60, "container"
    )[0]
    specs = [str(container.attrs)]  # on Swarm the key is a secret file, in no spec
    if backend == "swarm":
        specs += [str(service.attrs) for service in docker_client.services.list(filters=label)]
    folder, path = wait_finished(work_root, "hostile.yaml", timeout=120)
    out = work_root / "out" / path.name.removesuffix(".yaml")
    assert folder == "done", (out / "run.log").read_text()
    if backend == "swarm":
        assert len(specs) == 2 and all(SECRET not in spec for spec in specs)
    assert (out / "setuid.txt").read_text() == ""  # no setuid program in the image
    assert not list((work_root / "inbox").iterdir())  # no job was planted
    assert not (out / "private.txt").exists()
    assert "uid=1000" in (out / "id.txt").read_text()
    assert "key=\n" in (out / "leak.txt").read_text()  # no such variable at all
    # Nowhere the agent can look: no process's environment or command line, no file under
    # any mount; the token in its place is the job's and dies with it.
    assert (out / "procs.txt").exists() and SECRET not in (out / "procs.txt").read_text()
    assert (out / "found.txt").read_text() == ""
    events = (out / "events.jsonl").read_text()
    assert "Read-only file system" in events  # /etc, /usr/local/bin, /opt/codex
    assert "uid=0(" not in events  # neither sudo nor su nor a setuid binary made it root
    # The secret is in no file under the work root (nor in its jobs' filesystems' images)
    # and in no daemon log line.
    assert files_holding(work_root, SECRET.encode()) == []
    for log in tmp_path.parent.glob("**/watcherd-*.log"):
        assert SECRET not in log.read_text(errors="replace")
    # The upstream saw the key as a bearer token on every call: the job really ran with it.
    assert model.authorizations and set(model.authorizations) == {f"Bearer {SECRET}"}


def test_review_mode(
    work_root: Path, codex_daemon: Callable[..., DaemonProcess], model: ScriptedModel,
    git_server: GitServer,
) -> None:  # fmt: skip
    model.steps += [Step("message", "Review: looks fine.")] * 3
    codex_daemon()
    write_job(work_root / "inbox", "review.yaml", repo_url=git_server.url("demo.git"),
              prompt="Review the last commit", mode="review", retries=0)  # fmt: skip
    folder, path = wait_finished(work_root, "review.yaml", timeout=120)
    out = work_root / "out" / path.name.removesuffix(".yaml")
    assert folder == "done", (out / "run.log").read_text()
    assert "running codex review" in (out / "run.log").read_text()
    assert model.requests  # the review went through the model


def test_a_job_resumes_an_earlier_jobs_session_on_its_work(
    work_root: Path, codex_daemon: Callable[..., DaemonProcess], model: ScriptedModel,
    git_server: GitServer,
) -> None:  # fmt: skip
    model.steps += [
        Step("tool", "echo first > FIRST.md"),
        Step("message", "Remember the word PERIWINKLE."),
        Step("tool", "ls > /work/out/ls.txt"),
        Step("message", "Still here."),
    ]
    codex_daemon()
    url = git_server.url("demo.git")
    write_job(work_root / "inbox", "first.yaml", repo_url=url, prompt="start", retries=0)
    folder, first = wait_finished(work_root, "first.yaml", timeout=120)
    assert folder == "done"
    first_record = exit_record(work_root, first)
    asked_before = len(model.requests)

    write_job(work_root / "inbox", "second.yaml", repo_url=url, prompt="go on",
              resume="first", retries=0)  # fmt: skip
    folder, second = wait_finished(work_root, "second.yaml", timeout=120)
    out = work_root / "out" / second.name.removesuffix(".yaml")
    assert folder == "done", (out / "run.log").read_text()
    # The model got the first job's conversation back, and the workspace its work.
    assert "PERIWINKLE" in json.dumps(model.requests[asked_before]["input"])
    assert "FIRST.md" in (out / "ls.txt").read_text()
    record = exit_record(work_root, second)
    assert record["session_id"] == first_record["session_id"]
    assert record["commit_before"] == first_record["commit_after"]

    write_job(work_root / "inbox", "nothing.yaml", repo_url=url, prompt="x", resume="nope")
    folder, path = wait_finished(work_root, "nothing.yaml", timeout=60)
    assert folder == "failed"
    assert "resume: no job named 'nope'" in exit_record(work_root, path)["reason"]
