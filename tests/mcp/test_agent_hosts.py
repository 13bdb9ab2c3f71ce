"""End to end with a real agent host: the real Codex CLI (the binary the worker image pins,
run on this machine, tests/support/host_codex.py) driven by a scripted model on 127.0.0.1,
handing a job to a real daemon that runs it in the stand-in worker image.

- Over MCP: Codex is configured with ``watcherd mcp`` as an MCP server; the model's tool
  calls submit a job, wait for it and read its summary, which comes back to the host.
- Through the skill: the skill is installed where Codex loads skills; the model finds it
  in what Codex tells it, reads it, and runs the commands it shows, literally.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.helpers import CHECKOUT, DaemonProcess, cli_environ, wait_finished
from tests.support.host_codex import copy_codex_out, run_codex
from tests.support.model_server import (
    ScriptedModel,
    Step,
    codex_config,
    instructions_of,
    tool_output,
)

pytestmark = [pytest.mark.docker, pytest.mark.codex]


@pytest.fixture(scope="module")
def codex(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Path:
    return copy_codex_out(docker_client, tmp_path_factory.mktemp("host-codex"))


def watcherd_on_path(bin_dir: Path, daemon: DaemonProcess) -> Path:
    """A ``watcherd`` command for this checkout with the daemon's config, as an operator
    installs it (and its config in /etc/watcherd)."""
    bin_dir.mkdir()
    wrapper = bin_dir / "watcherd"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(str(CHECKOUT))} exec {shlex.quote(sys.executable)} "
        f'-m watcherd --config {shlex.quote(str(daemon.config_path))} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def readme_codex_snippet() -> str:
    """The README's config.toml for Codex."""
    readme = (CHECKOUT / "README.md").read_text(encoding="utf-8")
    (snippet,) = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.DOTALL)
                  if "[mcp_servers.watcherd]" in b]  # fmt: skip
    return snippet


def completed(stdout: str, kind: str) -> list[dict[str, Any]]:
    """The items of one kind that Codex's JSON events report completed."""
    found = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [e["item"] for e in found
            if e.get("type") == "item.completed" and e["item"].get("type") == kind]  # fmt: skip


def result_json(output: str | None) -> dict[str, Any]:
    """A tool result as Codex hands it to the model ("Wall time: ...\\nOutput:\\n{...}")."""
    assert output is not None
    text = output.split("Output:\n", 1)[-1]
    data: dict[str, Any] = json.loads(text)
    return data


def test_codex_submits_waits_and_reads_a_job_over_mcp(
    codex: Path, start_daemon: Callable[..., DaemonProcess], model: ScriptedModel,
    repo_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    daemon = start_daemon()
    calls: list[str] = []

    def respond(request: dict[str, Any]) -> Step:
        if not calls:
            calls.append("submit_job")
            return Step("mcp", "submit_job", {"repo_url": repo_url, "prompt": "succeed",
                                              "name": "via-mcp"})  # fmt: skip
        result = result_json(tool_output(request))
        if calls[-1] == "get_job":
            return Step("message", f"Job {result['job_id']} ended {result['state']}. "
                                   f"Its summary:\n{result['summary']}")  # fmt: skip
        if calls[-1] == "submit_job" or not result["ended"]:
            calls.append("wait_job")
            handle = result["job_id"] or result["name"]
            return Step("mcp", "wait_job", {"job": handle, "timeout_seconds": 20})
        calls.append("get_job")
        return Step("mcp", "get_job", {"job": result["job_id"]})

    model.respond = respond
    home = tmp_path / "codex-home"
    home.mkdir()
    # The README's snippet, word for word but for where the command and the root are.
    wrapper = watcherd_on_path(tmp_path / "bin", daemon)
    snippet = readme_codex_snippet()
    assert 'command = "watcherd"' in snippet and "/srv/agent-work" in snippet
    snippet = snippet.replace('"watcherd"', json.dumps(str(wrapper)), 1)
    snippet = snippet.replace("/srv/agent-work", str(daemon.root))
    (home / "config.toml").write_text(codex_config(model.base_url) + "\n" + snippet)
    workdir = tmp_path / "host-work"
    workdir.mkdir()
    done = run_codex(codex, home, workdir, "Get the widgets test fixed, in a sandbox.")
    assert done.returncode == 0, done.stderr[-3000:]
    # The job really ran, through the daemon, in the stand-in worker.
    folder, job_file = wait_finished(daemon.root, "via-mcp.yaml", timeout=10)
    job_id = job_file.name.removesuffix(".yaml")
    out = daemon.root / "out" / job_id
    assert folder == "done", (out / "exit.json").read_text()
    summary = (out / "summary.md").read_text()
    assert summary.strip() == "# done"
    # Codex called the server's tools, each completed, and the summary reached the host.
    called = completed(done.stdout, "mcp_tool_call")
    assert [item["tool"] for item in called] == calls
    assert calls[0] == "submit_job" and calls[-1] == "get_job" and "wait_job" in calls
    assert all(item["server"] == "watcherd" and item["status"] == "completed" for item in called)
    assert all(item["error"] is None for item in called)
    submitted = called[0]["result"]["structured_content"]
    assert submitted["name"] == "via-mcp.yaml" and submitted["job_id"] == job_id
    final = (home / "last-message.md").read_text()
    assert f"Job {job_id} ended done." in final
    assert summary.strip() in final


def test_codex_follows_the_skill_to_get_a_job_done(
    codex: Path, start_daemon: Callable[..., DaemonProcess], model: ScriptedModel,
    repo_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    daemon = start_daemon()
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(codex_config(model.base_url))
    installed = subprocess.run(
        [sys.executable, "-m", "watcherd", "--config", str(daemon.config_path), "skill",
         "install", "--dir", str(home / "skills")],
        env=cli_environ(), capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert installed == str(home / "skills" / "watcherd")
    bin_dir = watcherd_on_path(tmp_path / "bin", daemon).parent
    # Codex runs commands in a login shell, whose /etc/profile sets PATH anew: the user's
    # ~/.profile puts the folder back in front, as it does for ~/.local/bin.
    (home / ".profile").write_text(f"PATH={shlex.quote(str(bin_dir))}:$PATH\n")
    steps: list[str] = []

    def respond(request: dict[str, Any]) -> Step:
        if not steps:
            # The skill is among those Codex lists, with its description and its file.
            told = instructions_of(request)
            listed = re.search(r"- watcherd: (.+?) \(file: (r\d+)/watcherd/SKILL\.md\)", told)
            assert listed and "Use it for a fix" in listed.group(1), told[-3000:]
            root = re.search(rf"`{listed.group(2)}` = `([^`]+)`", told)
            assert root is not None
            steps.append("read")
            return Step("tool", f"cat {root.group(1)}/watcherd/SKILL.md")
        output = tool_output(request) or ""
        if steps == ["read"]:
            skill = output
            # Literally: its submit line with this task's repository, prompt and name,
            # then its wait and show lines for that name.
            submit = re.search(r"^watcherd submit --repo-url .+$", skill, re.MULTILINE)
            wait = re.search(r"^watcherd wait fix-42 .+$", skill, re.MULTILINE)
            assert submit and wait, skill[:2000]
            words = shlex.split(submit.group(0))
            words[words.index("--repo-url") + 1] = repo_url
            words[words.index("--prompt") + 1] = "succeed"
            words[words.index("--name") + 1] = "by-skill"
            command = " && ".join([shlex.join(words),
                                   wait.group(0).replace("fix-42", "by-skill"),
                                   "watcherd show by-skill"])  # fmt: skip
            steps.append("run")
            return Step("tool", command, {"yield_time_ms": 30000})
        steps.append("report")
        return Step("message", f"watcherd says:\n{output}")

    model.respond = respond
    workdir = tmp_path / "host-work"
    workdir.mkdir()
    done = run_codex(codex, home, workdir, "Fix the widgets test; hand it to watcherd.",
                     env={"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert steps == ["read", "run", "report"]
    folder, job_file = wait_finished(daemon.root, "by-skill.yaml", timeout=10)
    job_id = job_file.name.removesuffix(".yaml")
    assert folder == "done"
    final = (home / "last-message.md").read_text()
    assert f"by-skill.yaml  job {job_id}" in final  # what `watcherd show` printed
    assert "state:      done" in final
    assert "# done" in final  # the summary
    ran = completed(done.stdout, "command_execution")
    assert ran and all(item.get("exit_code") == 0 for item in ran), ran
