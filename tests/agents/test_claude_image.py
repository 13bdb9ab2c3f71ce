"""The Claude Code image and its run hook, with the real Claude Code against a scripted
Messages API on 127.0.0.1, in a container hardened as watcherd runs its jobs.

Needs the image: docker build --network host -f image/claude/Dockerfile -t
watcherd-claude:2.1.332 image/ (with the machine's extra CA certificates in image/certs/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tests.support.anthropic_server import ScriptedAnthropic, Step, tool_results, user_texts
from tests.support.helpers import wait_for
from watcherd.agents import claude
from watcherd.agents.claude import AgentReport, read_events

pytestmark = [pytest.mark.docker]

AGENT = "/usr/local/lib/watcherd/agent"
UID = 1000


@pytest.fixture(scope="module")
def image(docker_client: docker.DockerClient) -> str:
    try:
        docker_client.images.get(claude.IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"no image {claude.IMAGE}: build it as this module's docstring says")
    return claude.IMAGE


@pytest.fixture
def model() -> Iterator[ScriptedAnthropic]:
    server = ScriptedAnthropic(steps=[], lifetime=300).start()
    yield server
    server.stop()


@dataclass
class Run:
    code: int
    out: Path
    repo: Path
    home: Path
    logs: str

    @property
    def events(self) -> list[str]:
        return (self.out / "events.jsonl").read_text().splitlines()

    @property
    def report(self) -> AgentReport:
        return read_events(self.events)

    def explain(self) -> str:
        run_log = self.out / "run.log"
        return f"exit {self.code}\n{self.logs}\n{run_log.read_text() if run_log.exists() else ''}"


def chown(path: Path) -> None:
    for folder, dirs, files in os.walk(path):
        os.chown(folder, UID, UID)
        for name in [*dirs, *files]:
            os.lchown(os.path.join(folder, name), UID, UID)


def make_repo(path: Path) -> Path:
    path.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (path / "README.md").write_text("# demo\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "first")
    chown(path)
    return path


@dataclass
class Started:
    container: Any
    out: Path
    repo: Path
    home: Path

    def finish(self, timeout: float = 60) -> Run:
        try:
            code = int(self.container.wait(timeout=timeout)["StatusCode"])
            logs = self.container.logs().decode(errors="replace")
        finally:
            self.container.remove(force=True)
        return Run(code, self.out, self.repo, self.home, logs)


def start_agent(
    docker_client: docker.DockerClient,
    image: str,
    model: ScriptedAnthropic,
    folder: Path,
    prompt: str,
    *,
    home: Path | None = None,
    env: dict[str, str] | None = None,
) -> Started:
    """`agent run` as watcherd runs a job: user 1000, no capabilities, read-only root with
    tmpfs /tmp and home, the work tree, out/ and the agent home mounted. The scripted
    server is also the HTTP(S) proxy: a request for any other host would reach it too."""
    folder.mkdir()
    repo = make_repo(folder / "repo")
    out = folder / "out"
    out.mkdir()
    (out / "prompt.txt").write_text(prompt)
    if home is None:
        home = folder / "home"
        home.mkdir()
    chown(out)
    chown(home)
    environment = {
        "PROMPT_FILE": "/work/out/prompt.txt",
        "ANTHROPIC_BASE_URL": model.base_url,
        "ANTHROPIC_API_KEY": "test-key",
        "HTTPS_PROXY": model.base_url,
        "HTTP_PROXY": model.base_url,
        "NO_PROXY": "127.0.0.1,localhost",
        **(env or {}),
    }
    container = docker_client.containers.run(
        image,
        entrypoint=[AGENT, "run"],
        user=f"{UID}:{UID}",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        read_only=True,
        tmpfs={
            "/tmp": "rw,nosuid,nodev,mode=1777,size=256m",
            "/home/codex": f"rw,nosuid,nodev,uid={UID},gid={UID},size=256m",
        },
        network_mode="host",
        volumes={
            str(repo): {"bind": "/work/repo", "mode": "rw"},
            str(out): {"bind": "/work/out", "mode": "rw"},
            str(home): {"bind": claude.HOME, "mode": "rw"},
        },
        working_dir="/work/repo",
        environment=environment,
        pids_limit=256,
        mem_limit="1g",
        detach=True,
    )
    return Started(container, out, repo, home)


def run_agent(
    docker_client: docker.DockerClient,
    image: str,
    model: ScriptedAnthropic,
    folder: Path,
    prompt: str,
    *,
    home: Path | None = None,
    env: dict[str, str] | None = None,
) -> Run:
    return start_agent(docker_client, image, model, folder, prompt, home=home, env=env).finish()


def only_to_the_server(model: ScriptedAnthropic) -> None:
    """Every request Claude Code sent went to the scripted server, for the Messages API."""
    host = model.base_url.removeprefix("http://")
    for request in model.requests:
        assert request.method != "CONNECT", f"a request for {request.path}"
        assert request.path.startswith("/v1/messages"), request.path
        assert request.headers.get("Host") == host, request.headers


def test_version(docker_client: docker.DockerClient, image: str) -> None:
    output = docker_client.containers.run(
        image, entrypoint=[AGENT, "--version"], user=f"{UID}:{UID}", read_only=True,
        network_mode="none", cap_drop=["ALL"], remove=True,
    )  # fmt: skip
    assert output.decode() == f"{claude.VERSION}\n"


def test_a_tool_call_edits_the_repo_and_the_outputs_are_written(
    docker_client: docker.DockerClient, image: str, model: ScriptedAnthropic, tmp_path: Path
) -> None:
    model.steps += [
        Step("tool", "echo hello > NEW.md && cat NEW.md && echo key=${ANTHROPIC_API_KEY:-unset}"),
        Step("message", "Added NEW.md for you."),
    ]
    run = run_agent(docker_client, image, model, tmp_path / "job", "add NEW.md")
    assert run.code == 0, run.explain()
    assert (run.repo / "NEW.md").read_text() == "hello\n"
    assert (run.out / "last-message.md").read_text() == "Added NEW.md for you."
    report = run.report
    assert report.error is None
    assert report.last_message == "Added NEW.md for you."
    assert report.session_id is not None
    assert report.usage is not None
    assert (report.usage.input_tokens, report.usage.output_tokens) == (22, 14)
    assert report.usage.cost_usd is not None and report.usage.cost_usd > 0
    # Claude Code ran the command and sent its output back; the command did not see the
    # key Claude Code itself used.
    assert len(model.turns) == 2
    assert tool_results(model.turns[1]) == ["hello\nkey=unset"]
    assert {r.headers.get("x-api-key") for r in model.requests} == {"test-key"}
    assert user_texts(model.turns[0])[-1] == "add NEW.md"
    # The session is where claude.session_paths says, in the mounted home.
    transcript, _ = claude.session_paths(report.session_id)
    assert (run.home / transcript).is_file()
    only_to_the_server(model)


def test_a_failing_model_fails_the_run_with_its_reason(
    docker_client: docker.DockerClient, image: str, model: ScriptedAnthropic, tmp_path: Path
) -> None:
    model.steps += [Step("fail", "the scripted model refuses")]
    run = run_agent(docker_client, image, model, tmp_path / "job", "do it")
    assert run.code == 1, run.explain()
    assert not (run.out / "last-message.md").exists()
    report = run.report
    assert report.error is not None and "the scripted model refuses" in report.error
    assert report.last_message is None
    only_to_the_server(model)


@pytest.mark.parametrize("prompt", ["--version", "- fix the test", "-", "resume", "help"])
def test_the_prompt_reaches_the_model_literally(
    docker_client: docker.DockerClient, image: str, model: ScriptedAnthropic, tmp_path: Path,
    prompt: str,
) -> None:  # fmt: skip
    model.steps += [Step("message", "ok")]
    run = run_agent(docker_client, image, model, tmp_path / "job", prompt)
    assert run.code == 0, run.explain()
    assert len(model.turns) == 1
    assert user_texts(model.turns[0])[-1] == prompt


def test_a_prompt_that_looks_like_a_command_goes_to_the_model_as_text(
    docker_client: docker.DockerClient, image: str, model: ScriptedAnthropic, tmp_path: Path
) -> None:
    """Claude Code runs "/init" as its own command: the hook sends it with a space first."""
    model.steps += [Step("message", "ok")]
    run = run_agent(docker_client, image, model, tmp_path / "job", "/init now\nand more")
    assert run.code == 0, run.explain()
    assert user_texts(model.turns[0])[-1] == " /init now\nand more"


def test_a_second_run_resumes_the_first(
    docker_client: docker.DockerClient, image: str, model: ScriptedAnthropic, tmp_path: Path
) -> None:
    model.steps += [Step("tool", "echo one > ONE.md"), Step("message", "first answer")]
    first = run_agent(docker_client, image, model, tmp_path / "first", "first prompt")
    assert first.code == 0, first.explain()
    session = first.report.session_id
    assert session is not None

    # The same home, kept.
    model.steps += [Step("message", "second answer")]
    second = run_agent(docker_client, image, model, tmp_path / "second", "second prompt",
                       home=first.home, env={"AGENT_RESUME": session})  # fmt: skip
    assert second.code == 0, second.explain()
    assert second.report.session_id == session
    assert second.report.last_message == "second answer"
    conversation = json.dumps(model.turns[-1]["messages"])
    for said in ("first prompt", "first answer", "second prompt", "toolu_"):
        assert said in conversation
    assert user_texts(model.turns[-1])[-1] == "second prompt"

    # A fresh home with only the session files (what the daemon copies) resumes too.
    home = tmp_path / "fresh-home"
    for name in claude.SESSION_FILES:
        shutil.copytree(first.home / name, home / name)
    model.steps += [Step("message", "third answer")]
    third = run_agent(docker_client, image, model, tmp_path / "third", "third prompt",
                      home=home, env={"AGENT_RESUME": session})  # fmt: skip
    assert third.code == 0, third.explain()
    conversation = json.dumps(model.turns[-1]["messages"])
    for said in ("first prompt", "second answer", "third prompt"):
        assert said in conversation
    only_to_the_server(model)


def test_the_agent_writes_only_to_its_folders_and_talks_only_to_the_server(
    docker_client: docker.DockerClient, image: str, model: ScriptedAnthropic, tmp_path: Path
) -> None:
    targets = ["/etc/pwned", "/usr/local/bin/pwned", "/opt/claude/bin/claude",
               "/usr/local/lib/watcherd/agent", "/work/pwned", "/work/repo/ok", "/tmp/ok",
               "/work/out/ok"]  # fmt: skip
    attempts = "; ".join(
        f'if (: >>{target}) 2>/dev/null; then echo "wrote {target}"; '
        f'else echo "denied {target}"; fi'
        for target in targets
    )
    model.steps += [
        Step("tool", attempts),
        Step("message", "tried"),
    ]
    run = run_agent(docker_client, image, model, tmp_path / "job", "try")
    assert run.code == 0, run.explain()
    results = tool_results(model.turns[1])[0].splitlines()
    assert results == [
        "denied /etc/pwned", "denied /usr/local/bin/pwned", "denied /opt/claude/bin/claude",
        "denied /usr/local/lib/watcherd/agent", "denied /work/pwned", "wrote /work/repo/ok",
        "wrote /tmp/ok", "wrote /work/out/ok",
    ]  # fmt: skip
    only_to_the_server(model)


@pytest.mark.parametrize(
    "env",
    [
        {"AGENT_RESUME": "--help"},
        {"AGENT_MAX_TURNS": "1; rm -rf /"},
        {"AGENT_MODE": "review"},
        {"PROMPT_FILE": "/work/out/missing.txt"},
        {"AGENT_FLAGS": "'unbalanced"},
    ],
)
def test_bad_input_is_refused_before_claude_starts(
    docker_client: docker.DockerClient, image: str, model: ScriptedAnthropic, tmp_path: Path,
    env: dict[str, str],
) -> None:  # fmt: skip
    run = run_agent(docker_client, image, model, tmp_path / "job", "x", env=env)
    assert run.code == 64, run.explain()
    assert model.requests == []


def test_sigterm_stops_claude_code_and_its_command(
    docker_client: docker.DockerClient, image: str, model: ScriptedAnthropic, tmp_path: Path
) -> None:
    """The worker stops the hook with SIGTERM on a timeout: Claude Code ends at once."""
    model.steps += [
        Step("tool", "echo started > /work/out/started; sleep 60; echo slept"),
        Step("message", "never"),
    ]
    started = start_agent(docker_client, image, model, tmp_path / "job", "wait")
    wait_for(lambda: (started.out / "started").exists(), 30, "the command to start")
    began = time.monotonic()
    started.container.kill(signal="SIGTERM")
    run = started.finish(timeout=20)
    assert time.monotonic() - began < 10
    assert run.code == 143, run.explain()
    assert len(model.turns) == 1
    assert not (run.out / "last-message.md").exists()
