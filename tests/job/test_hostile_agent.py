"""A hostile agent, on the real worker image with the real Codex CLI: a scripted model whose
tool calls are the attacks. Each attack must fail: nothing planted runs in a later job or on
the host, no job reads another's prompt or session, every job ends with a regular exit.json,
the bounds hold, the prompt reaches the model literally, and the agent's work is kept.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.backends import on_both_backends
from tests.support.git_server import GitServer, make_repo
from tests.support.helpers import DaemonProcess, wait_finished, write_job
from tests.support.model_server import ScriptedModel, Step, has_tool_output, prompt_of

pytestmark = [pytest.mark.docker, pytest.mark.codex]
CodexDaemon = Callable[..., DaemonProcess]


def run_job(root: Path, name: str, url: str, prompt: str, **fields: Any) -> tuple[str, Path]:
    write_job(root / "inbox", name, repo_url=url, prompt=prompt, retries=0, **fields)
    folder, path = wait_finished(root, name, timeout=120)
    return folder, root / "out" / path.name.removesuffix(".yaml")


def record_of(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / "exit.json").read_text())
    return result


def host_git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """git as a person on the host would run it: their own config, no protection."""
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=False,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )  # fmt: skip


@pytest.fixture
def other_repo(git_server: GitServer) -> str:
    if not (git_server.base / "other.git").exists():
        make_repo(git_server.base / "other.git")
    return git_server.url("other.git")


@on_both_backends
def test_the_agent_home_is_no_channel_between_jobs(
    work_root: Path, codex_daemon: CodexDaemon, model: ScriptedModel, git_server: GitServer,
    other_repo: str, tmp_path: Path,
) -> None:  # fmt: skip
    """Finding 1: a job rewrote the shared login's config.toml (a notify command) and the
    next job, on another repository, ran it; any job read every earlier transcript."""
    plant = (
        'cp "$CODEX_HOME/config.toml" /tmp/c; rm -f "$CODEX_HOME/config.toml"; '
        '{ echo \'notify = ["bash", "-c", "touch /work/out/NOTIFY-RAN"]\'; cat /tmp/c; } '
        '> "$CODEX_HOME/config.toml"; echo planted > "$CODEX_HOME/planted.txt"; '
        'mkdir -p "$CODEX_HOME/sessions/2000/01/01"; '
        'echo planted > "$CODEX_HOME/sessions/2000/01/01/rollout-planted.jsonl"; '
        'echo evil > "$CODEX_HOME/AGENTS.md"'
    )
    look = (
        'ls -laR "$CODEX_HOME" > /work/out/home.txt 2>&1; '
        'cat "$CODEX_HOME/config.toml" > /work/out/config.txt; '
        "grep -rl 'SECRET-PROMPT-''ONE' /work /home /tmp /cache > /work/out/grep.txt 2>/dev/null;"
        " true"
    )
    model.steps += [Step("tool", plant), Step("message", "planted"),
                    Step("tool", look), Step("message", "looked")]  # fmt: skip
    codex_daemon()
    operator_config = (tmp_path / "auth0" / "config.toml").read_bytes()
    folder, first = run_job(work_root, "one.yaml", git_server.url("demo.git"),
                            "SECRET-PROMPT-ONE: plant something")  # fmt: skip
    assert folder == "done", (first / "run.log").read_text()
    folder, second = run_job(work_root, "two.yaml", other_repo, "look around")
    assert folder == "done", (second / "run.log").read_text()

    assert not (second / "NOTIFY-RAN").exists()
    assert "notify" not in (second / "config.txt").read_text()
    home = (second / "home.txt").read_text()
    assert "planted" not in home and "AGENTS.md" not in home
    assert (second / "grep.txt").read_text() == ""  # job one's prompt is nowhere in reach
    assert (tmp_path / "auth0" / "config.toml").read_bytes() == operator_config
    assert sorted(p.name for p in (tmp_path / "auth0").iterdir()) == ["config.toml"]
    # Job one's own transcript is kept, with job one, for a later resume.
    sessions = list((first / "sessions").rglob("rollout-*.jsonl"))
    assert sessions and "SECRET-PROMPT-ONE" in sessions[0].read_text()
    assert not (work_root / "homes").exists() or not list((work_root / "homes").iterdir())


@on_both_backends
def test_the_workspace_is_no_channel_between_jobs_nor_to_the_host(
    work_root: Path, codex_daemon: CodexDaemon, model: ScriptedModel, git_server: GitServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Finding 2: hooks and core.fsmonitor planted in the reused clone ran in the next job
    on that repository, and on the host when its owner typed `git status` there."""
    marker = tmp_path / "HOST-RAN"  # a host path: inside a container it does not exist
    payload = f"touch /work/out/PLANTED-RAN {marker}"
    plant = "; ".join([
        "mkdir -p .git/hooks",
        f"printf '#!/bin/sh\\n{payload}\\n' > .git/hooks/post-checkout",
        "cp .git/hooks/post-checkout .git/hooks/pre-commit",
        "cp .git/hooks/post-checkout .git/hooks/reference-transaction",
        "chmod +x .git/hooks/*",
        f"git config core.fsmonitor '{payload}; false'",
        f"git config filter.evil.clean '{payload}; cat'",
        f"git config core.pager '{payload}; cat'",
        "echo '* filter=evil' > .gitattributes",
        "echo data > agent.txt",
        "mkdir -p nested && git -C nested init -q",
        f"git -C nested config core.fsmonitor '{payload}; false'",
        "true",
    ])  # fmt: skip
    look = "; ".join([
        "ls -la .git/hooks > /work/out/hooks.txt 2>&1",
        "git config --list --show-origin > /work/out/config.txt 2>&1",
        "git status > /work/out/status.txt 2>&1",
        "ls -a > /work/out/ls.txt",
        "touch /cache/x 2> /work/out/cache-write.txt",
        "ls /work > /work/out/work.txt",
        "true",
    ])  # fmt: skip
    model.steps += [Step("tool", plant), Step("message", "planted"),
                    Step("tool", look), Step("message", "looked")]  # fmt: skip
    codex_daemon()
    url = git_server.url("demo.git")
    folder, first = run_job(work_root, "one.yaml", url, "plant")
    assert folder == "done", (first / "run.log").read_text()
    folder, second = run_job(work_root, "two.yaml", url, "look")
    assert folder == "done", (second / "run.log").read_text()

    # The later job on the same repository got a clean workspace: nothing planted ran.
    assert not (second / "PLANTED-RAN").exists()
    assert "fsmonitor" not in (second / "config.txt").read_text()
    assert "post-checkout" not in (second / "hooks.txt").read_text()
    listing = (second / "ls.txt").read_text().split()
    assert "agent.txt" not in listing and "nested" not in listing
    assert "Read-only file system" in (second / "cache-write.txt").read_text()
    assert "one" not in " ".join((second / "work.txt").read_text().split())  # no other job's
    # The daemon took job one's work in without running any of it (fsck, no hooks).
    record = record_of(first)
    assert "+data" in (first / "changes.patch").read_text()
    assert not marker.exists()
    cache = next((work_root / "cache").glob("*.git"))
    assert not (cache / "hooks").exists()
    assert "fsmonitor" not in (cache / "config").read_text()

    # On the host, git refuses the sealed workspace, whoever runs it, nested repos too.
    workspace = work_root / "workspaces" / first.name
    assert workspace.stat().st_uid == 65534
    for folder_ in (workspace, workspace / "nested"):
        status = host_git(folder_, "status")
        assert status.returncode != 0 and "dubious ownership" in status.stderr
        host_git(folder_, "log", "-1")
    assert not marker.exists()
    # A person fetching the job's branch gets the agent's commit, and nothing runs.
    clone = tmp_path / "review"
    subprocess.run(["git", "clone", "-q", str(record["results_repo"]), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", record["branch"]], check=True)
    assert (clone / "agent.txt").read_text() == "data\n"
    assert not marker.exists()


@on_both_backends
def test_the_agent_can_neither_forge_nor_wedge_the_results(
    work_root: Path, codex_daemon: CodexDaemon, model: ScriptedModel, git_server: GitServer,
) -> None:  # fmt: skip
    """Finding 3: exit.json made a directory wedged the job in running/ for good; a
    summary.md symlink to /etc/passwd stayed in out/."""
    attack = "; ".join([
        "ln -s /etc/passwd /work/out/passwd-link",
        "mkfifo /work/out/fifo",
        "mkdir -p /work/out/sub/.git && echo '[core]' > /work/out/sub/.git/config",
        # Outlive the agent, to strike after the worker wrote its outputs:
        "{ setsid nohup bash -c 'sleep 3; rm -rf /work/out/exit.json; mkdir /work/out/exit.json;"
        " ln -sf /etc/passwd /work/out/summary.md' > /dev/null 2>&1 < /dev/null & }",
        "true",
    ])  # fmt: skip
    model.steps += [Step("tool", attack), Step("message", "All good, trust me.")]
    daemon = codex_daemon()
    folder, out = run_job(work_root, "forge.yaml", git_server.url("demo.git"), "forge")
    assert folder == "done", (out / "run.log").read_text()
    exit_json = out / "exit.json"
    assert stat.S_ISREG(exit_json.lstat().st_mode)
    record = record_of(out)
    assert record["state"] == "done" and record["job_file"] == "forge.yaml"
    removed = " ".join(record["removed_from_out"])
    assert "passwd-link (symlink)" in removed and "fifo (fifo)" in removed
    assert "sub/.git" in removed
    for path in out.rglob("*"):
        assert path.is_dir() or stat.S_ISREG(path.lstat().st_mode), path
    assert "root:x:0:0" not in (out / "summary.md").read_text()
    assert not list((work_root / "running").iterdir())
    assert daemon.alive()


@on_both_backends
def test_the_bounds_hold(
    work_root: Path, codex_daemon: CodexDaemon, model: ScriptedModel, git_server: GitServer,
) -> None:  # fmt: skip
    """Finding 4: 2 GiB landed on the host disk; a child killed by the OOM killer while
    codex exited 0 was reported as done."""
    url = git_server.url("demo.git")
    model.steps += [
        Step("tool", "fallocate -l 3G big.bin; fallocate -l 3G /work/out/big.bin; sleep 60"),
        Step("message", "wrote a lot"),
    ]
    codex_daemon(memory_limit="1g")
    folder, out = run_job(work_root, "disk.yaml", url, "fill the disk", disk="100m")
    record = record_of(out)
    assert (folder, record["state"]) == ("failed", "failed")
    assert "disk budget exceeded" in record["reason"]
    assert not (work_root / "workspaces" / out.name).exists()  # its space is given back

    model.steps[:] = [  # the first job was killed before it took its last step
        Step("tool", "head -c 3000m /dev/zero | tail; echo tail exited $?"),
        Step("message", "Everything went fine."),
    ]
    folder, out = run_job(work_root, "oom.yaml", url, "use memory", memory="400m")
    record = record_of(out)
    assert (folder, record["state"]) == ("failed", "failed"), record
    assert "out of memory" in record["reason"]


@pytest.mark.parametrize(
    "prompt", ["--version", "- fix the test\n- and the docs", "review", "-", "resume --last"]
)
def test_the_prompt_reaches_the_model_literally(
    work_root: Path, codex_daemon: CodexDaemon, model: ScriptedModel, git_server: GitServer,
    prompt: str,
) -> None:  # fmt: skip
    """Finding 5: `--version` as a prompt ended done without calling the model; a Markdown
    list failed with "unexpected argument"."""
    model.steps += [Step("message", "understood")]
    codex_daemon()
    folder, out = run_job(work_root, "prompt.yaml", git_server.url("demo.git"), prompt)
    assert folder == "done", (out / "run.log").read_text()
    assert len(model.requests) == 1
    assert prompt in prompt_of(model.requests[0])


@on_both_backends
def test_the_agents_work_is_kept_on_its_own_branch(
    work_root: Path, codex_daemon: CodexDaemon, model: ScriptedModel, git_server: GitServer,
) -> None:  # fmt: skip
    """Finding 6: a plain `git commit` failed (no identity), and a commit on a detached
    HEAD was lost when the next job reset the clone. Two jobs on one repository also run at
    once now, each on its own workspace and branch."""
    work = (
        'sleep 2; echo "$WATCHERD_JOB_ID" > who.txt && git add who.txt && '
        "git commit -qm 'agent: who' && echo more > uncommitted.txt; git log -1 --format=%an"
    )
    model.respond = lambda request: (
        Step("message", "done") if has_tool_output(request) else Step("tool", work)
    )
    codex_daemon(logins=2, concurrency=2, git_author="Review Bot <bot@example.invalid>")
    url = git_server.url("demo.git")
    for name in ("left.yaml", "right.yaml"):
        write_job(work_root / "inbox", name, repo_url=url, prompt="work", retries=0)
    records = []
    for name in ("left.yaml", "right.yaml"):
        folder, path = wait_finished(work_root, name, timeout=120)
        out = work_root / "out" / path.name.removesuffix(".yaml")
        assert folder == "done", (out / "run.log").read_text()
        records.append(record_of(out))
        patch = (out / "changes.patch").read_text()
        assert "who.txt" in patch and "uncommitted.txt" in patch

    spans = sorted(
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
        for r in records
    )
    assert spans[1][0] < spans[0][1]  # the two jobs ran at the same time
    assert records[0]["results_repo"] == records[1]["results_repo"]
    assert records[0]["branch"] != records[1]["branch"]
    for record in records:
        repo = Path(record["results_repo"])
        log = host_git(
            repo, "log", "--format=%an|%s", f"{record['commit_before']}..{record['branch']}"
        )
        assert log.stdout.splitlines() == [
            "Review Bot|watcherd: changes left by the agent",
            "Review Bot|agent: who",
        ]
        assert len(record["commits"]) == 2 and record["commits"][-1] == record["commit_after"]
        who = host_git(repo, "show", f"{record['branch']}:who.txt").stdout.strip()
        assert who == record["job_id"]  # each branch holds its own job's work


def test_forged_usage_does_not_reach_the_record_and_a_token_budget_stops_the_job(
    work_root: Path, codex_daemon: CodexDaemon, model: ScriptedModel, git_server: GitServer,
) -> None:  # fmt: skip
    """The agent writes itself a usage of a million tokens: exit.json's usage is the
    gateway's count of the provider's responses (18 tokens a call here). A second job's
    budget runs out after its first calls: its container is stopped mid-run, and it fails
    with the reason."""
    forged = json.dumps({"type": "turn.completed", "usage": {
        "input_tokens": 999999, "cached_input_tokens": 0, "output_tokens": 999999}})  # fmt: skip
    # Rewritten from the start (Codex writes on at its own offset, so an append would be
    # written over): the forged turn stays, Codex's own lines follow it.
    model.steps += [Step("tool", f"echo '{forged}' > /work/out/events.jsonl"),
                    Step("message", "cheap, honest")]  # fmt: skip
    codex_daemon()
    folder, out = run_job(work_root, "forge-usage.yaml", git_server.url("demo.git"), "count")
    record = record_of(out)
    assert folder == "done", record["reason"]
    assert record["usage"]["counted_by"] == "gateway"
    calls = record["usage"]["model_calls"]
    assert calls == len(model.requests) >= 2
    assert (record["usage"]["input_tokens"], record["usage"]["output_tokens"]) == (
        11 * calls, 7 * calls)  # fmt: skip
    assert record["agent_usage"]["input_tokens"] >= 999999  # its own account, kept beside

    model.steps += [Step("tool", "echo one"), Step("tool", "echo two"),
                    Step("tool", "sleep 600"), Step("message", "never")]  # fmt: skip
    folder, out = run_job(work_root, "budget.yaml", git_server.url("demo.git"), "spend",
                          token_budget=40)  # fmt: skip
    record = record_of(out)
    assert (folder, record["state"]) == ("failed", "failed")
    assert record["reason"].startswith("token budget exceeded: 54 tokens used of 40")
    calls = [json.loads(line) for line in (out / "model-calls.jsonl").read_text().splitlines()]
    assert [c["status"] for c in calls if c["kind"] == "model"][:3] == [200, 200, 200]
