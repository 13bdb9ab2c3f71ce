"""Every agent besides Codex through the daemon: the real binary in its image, a scripted
server speaking its protocol on 127.0.0.1, the same outputs whatever the agent. Needs
`watcherd image build all` (.ci/run). Codex has its own, in tests/test_worker_image.py."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support import anthropic_server, gemini_server, openai_chat_server
from tests.support.attacks import attack_targets
from tests.support.backends import on_both_backends
from tests.support.git_server import GitServer
from tests.support.helpers import (
    DaemonProcess,
    StartDaemon,
    files_holding,
    wait_finished,
    write_job,
)
from watcherd.agents import AGENTS
from watcherd.agents.opencode import CONFIG_FILES as OPENCODE_CONFIG_FILES

pytestmark = [pytest.mark.docker]

Step = Any  # each server's own Step(kind, text)


@dataclass(frozen=True)
class Case:
    agent: str
    start_server: Callable[[], Any]  # .steps, .base_url, .stop()
    step: Callable[[str, str], Step]
    settings: Callable[[Any, Path], dict[str, Any]]  # daemon config for this agent
    secret: str  # the credential the agent's commands must not see
    session: str  # what out/<id>/sessions/ holds after a run
    job: dict[str, Any]
    check: Callable[[Any], None] = lambda server: None  # what else the model server saw
    presented: Callable[[Any], str] = lambda request: ""  # the key a request carried upstream


# Canaries: each operator key appears once, in its key file; anywhere else is a leak.
CLAUDE_KEY = "sk-ant-CANARY-" + secrets.token_hex(12)
GEMINI_KEY = "gemini-CANARY-" + secrets.token_hex(12)
OPENCODE_KEY = "sk-CANARY-" + secrets.token_hex(12)


def _key_file(tmp: Path, line: str) -> str:
    path = tmp / "agent.env"
    path.write_text(line + "\n")
    path.chmod(0o600)
    return str(path)


def _config_dir(tmp: Path, agent: str, files: dict[str, Any]) -> str:
    """The operator's config dir for one agent, with these JSON files in it."""
    folder = tmp / f"{agent}-bot"
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(content))
    return str(folder)


def _claude_settings(server: Any, tmp: Path) -> dict[str, Any]:
    # The endpoint only in the operator's settings.json (its env block): the job's home
    # gets that file from Claude's own config dir.
    settings = {"env": {"ANTHROPIC_BASE_URL": server.base_url}}
    return {"agents": {"claude": {
        "api_key_file": _key_file(tmp, "ANTHROPIC_API_KEY=" + CLAUDE_KEY),
        "config_dir": _config_dir(tmp, "claude", {"settings.json": settings})}}}  # fmt: skip


GEMINI_CONFIGURED_MODEL = "model-from-config-dir"


def _gemini_settings(server: Any, tmp: Path) -> dict[str, Any]:
    # The model only in the operator's settings.json; Gemini CLI takes its endpoint from
    # the environment alone.
    settings = {"model": {"name": GEMINI_CONFIGURED_MODEL}}
    return {"agents": {"gemini": {
        "api_key_file": _key_file(tmp, "GEMINI_API_KEY=" + GEMINI_KEY),
        "env": {"GOOGLE_GEMINI_BASE_URL": server.base_url},
        "config_dir": _config_dir(tmp, "gemini", {"settings.json": settings})}}}  # fmt: skip


def _gemini_used_the_configured_model(server: Any) -> None:
    generations = [r.path for r in server.requests if r.is_generation]
    assert generations and all(GEMINI_CONFIGURED_MODEL in path for path in generations)


def _opencode_settings(server: Any, tmp: Path) -> dict[str, Any]:
    config = tmp / "opencode-bot" / OPENCODE_CONFIG_FILES[0]  # the operator's provider
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps(openai_chat_server.opencode_config(server.base_url)))
    return {
        "extra_env": {"SCRIPTED_API_KEY": OPENCODE_KEY},
        "agents": {"opencode": {"config_dir": str(tmp / "opencode-bot")}},
    }


CASES = [
    Case(
        agent="claude",
        start_server=lambda: anthropic_server.ScriptedAnthropic(steps=[], lifetime=300).start(),
        step=anthropic_server.Step,
        settings=_claude_settings,
        secret=CLAUDE_KEY,
        presented=lambda r: r.headers.get("x-api-key", ""),
        session="projects",
        job={},
    ),
    Case(
        agent="gemini",
        start_server=lambda: gemini_server.ScriptedGemini(steps=[]).start(),
        step=gemini_server.Step,
        settings=_gemini_settings,
        secret=GEMINI_KEY,
        presented=lambda r: r.headers.get("x-goog-api-key", ""),
        session="tmp",
        job={},
        check=_gemini_used_the_configured_model,
    ),
    Case(
        agent="opencode",
        start_server=lambda: openai_chat_server.ChatModel(steps=[]).start(),
        step=openai_chat_server.Step,
        settings=_opencode_settings,
        secret=OPENCODE_KEY,
        presented=lambda r: r.headers.get("Authorization", "").removeprefix("Bearer "),
        session="data/opencode/opencode.db",
        job={},
    ),
]  # fmt: skip


@pytest.fixture(params=CASES, ids=lambda case: case.agent)
def case(request: pytest.FixtureRequest) -> Case:
    found: Case = request.param
    return found


@pytest.fixture
def server(case: Case) -> Iterator[Any]:
    started = case.start_server()
    yield started
    started.stop()


@pytest.fixture
def agent_daemon(
    case: Case, server: Any, start_daemon: StartDaemon, tmp_path: Path,
    docker_client: docker.DockerClient,
) -> Callable[[], DaemonProcess]:  # fmt: skip
    docker_client.images.get(AGENTS[case.agent].image)  # built by .ci/run

    def start() -> DaemonProcess:
        # No auth_mode: the default (Codex's login), under which other agents' jobs must
        # still take their settings from their own config dirs and lease no login.
        return start_daemon(
            auth_mode=None, allowed_protocols=["git"],
            default_timeout=120, default_agent=case.agent, **case.settings(server, tmp_path),
        )  # fmt: skip

    return start


def run(root: Path, case: Case, git_server: GitServer, name: str, prompt: str) -> tuple[str, Path]:
    write_job(root / "inbox", name, repo_url=git_server.url("demo.git"), prompt=prompt,
              retries=0, **case.job)  # fmt: skip
    folder, path = wait_finished(root, name, timeout=120)
    return folder, root / "out" / path.name.removesuffix(".yaml")


@on_both_backends
def test_the_agent_edits_the_repository_on_its_branch(
    work_root: Path, case: Case, server: Any, agent_daemon: Callable[[], DaemonProcess],
    git_server: GitServer,
) -> None:  # fmt: skip
    server.steps += [case.step("tool", "echo hello > NEW.md"), case.step("message", "Added.")]
    agent_daemon()
    folder, out = run(work_root, case, git_server, "edit.yaml", "add NEW.md")
    record = json.loads((out / "exit.json").read_text())
    assert folder == "done", (record["reason"], (out / "run.log").read_text())
    assert record["agent"] == case.agent and record["agent_version"]
    assert record["session_id"] and record["usage"]["input_tokens"] > 0
    shown = subprocess.run(
        ["git", "--git-dir", record["results_repo"], "show", f"{record['branch']}:NEW.md"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shown.stdout == "hello\n"
    assert "+hello" in (out / "changes.patch").read_text()
    assert "Added." in (out / "last-message.md").read_text()
    assert (out / "sessions" / case.session).exists()  # its session, for a resume
    case.check(server)


def test_a_failing_model_fails_the_job_with_the_agents_reason(
    work_root: Path, case: Case, server: Any, agent_daemon: Callable[[], DaemonProcess],
    git_server: GitServer,
) -> None:  # fmt: skip
    server.steps += [case.step("fail", "the scripted model refuses")]
    agent_daemon()
    folder, out = run(work_root, case, git_server, "fail.yaml", "x")
    record = json.loads((out / "exit.json").read_text())
    assert (folder, record["state"]) == ("failed", "failed")
    assert f"{case.agent} exited with code" in record["reason"]
    assert "the scripted model refuses" in record["reason"]


@on_both_backends
def test_a_hostile_agent_finds_no_key_and_reaches_nothing_but_its_model(
    work_root: Path, case: Case, server: Any, agent_daemon: Callable[[], DaemonProcess],
    git_server: GitServer, docker_client: docker.DockerClient, backend: str,
) -> None:  # fmt: skip
    """Its tool calls read every process's environment and command line, search every
    mount for the key and for another job's home, plant a job in the inbox, and try TCP and
    UDP to the host's bridge addresses, the host's loopback and another container: the key
    and the other home are nowhere, nothing is planted or reached, and the upstream still
    gets the key on every call."""
    other_home = work_root / "homes" / "20261127T000000Z-other-aaaaaa"
    other_home.mkdir(parents=True)
    (other_home / "settings.json").write_text('{"secret": "OTHER-JOBS-HOME"}')
    with attack_targets(docker_client) as targets:
        attack = "; ".join([
            "touch /work/inbox/pwn.yaml 2> /work/out/inbox.txt",
            "grep -rl 'OTHER-JOBS-''HOME' / --exclude-dir=proc --exclude-dir=sys "
            "> /work/out/grep.txt 2>/dev/null",
            "env > /work/out/env.txt",
            targets.script(case.secret),
        ])  # fmt: skip
        server.steps += [case.step("tool", attack), case.step("message", "done")]
        agent_daemon()
        folder, out = run(work_root, case, git_server, "contained.yaml", "escape")
        assert folder == "done", (out / "run.log").read_text()
        targets.check(out, case.secret, backend)
    assert not (work_root / "inbox" / "pwn.yaml").exists()
    assert (out / "grep.txt").read_text() == ""  # another job's home is nowhere in reach
    assert case.secret not in (out / "env.txt").read_text()
    assert files_holding(work_root, case.secret.encode()) == []  # nor under the work root
    calls = [r for r in server.requests if getattr(r, "kind", "step") == "step"]
    assert calls and {case.presented(r) for r in calls} == {case.secret}
    record = json.loads((out / "exit.json").read_text())
    assert record["usage"]["counted_by"] == "gateway" and record["usage"]["model_calls"] >= 2
    assert (out / "model-calls.jsonl").read_text().count('"kind":"model"') >= 2
