"""The OpenCode image's run hook with the real OpenCode binary, in a container hardened as
watcherd runs jobs, against a scripted Chat Completions server on 127.0.0.1.

Every run also points HTTP(S)_PROXY at that server, which records and refuses whatever is
meant for another host: each run checks that nothing but the model was asked for.
Build the image first (from a checkout, with the proxy's CA in image/certs/ if needed):
docker build --network host -f image/opencode/Dockerfile -t watcherd-opencode:1.18.33 image
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from tests.support.openai_chat_server import (
    ChatModel,
    Step,
    has_tool_output,
    opencode_config,
    user_texts,
)
from watcherd.agents import opencode
from watcherd.agents.opencode import AgentReport, read_events

pytestmark = [pytest.mark.docker, pytest.mark.opencode]

SECRET = "sk-watcherd-opencode-4e2d1b"
INSTRUCTIONS = "Instructions-marker-7f3a: keep answers short."
UID = 1000


@pytest.fixture(scope="module")
def image(docker_client: docker.DockerClient) -> str:
    try:
        docker_client.images.get(opencode.IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"no image {opencode.IMAGE}: see this module's docstring to build it")
    return opencode.IMAGE


@pytest.fixture
def chat() -> Iterator[ChatModel]:
    server = ChatModel(steps=[], lifetime=300).start()
    yield server
    server.stop()


@dataclass
class Run:
    code: int
    out: Path
    home: Path
    repo: Path
    logs: str

    def report(self) -> AgentReport:
        return read_events((self.out / "events.jsonl").read_text().splitlines())

    def run_log(self) -> str:
        return (self.out / "run.log").read_text(errors="replace")


def make_repo(repo: Path) -> None:
    repo.mkdir(parents=True)
    (repo / "README.md").write_text("# demo\n")
    (repo / "AGENTS.md").write_text(INSTRUCTIONS + "\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
            cwd=repo, check=True, capture_output=True,
        )  # fmt: skip


def new_home(home: Path, chat: ChatModel) -> Path:
    """A fresh agent home with the operator's config, as the daemon prepares it."""
    config = home / opencode.CONFIG_FILES[0]
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps(opencode_config(chat.base_url)))
    return home


def chown(folder: Path) -> None:
    os.chown(folder, UID, UID)
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, name), UID, UID)


def run_hook(
    client: docker.DockerClient, image: str, chat: ChatModel, base: Path, prompt: str,
    home: Path | None = None, env: dict[str, str] | None = None,
) -> Run:  # fmt: skip
    """`agent run` in a container hardened as the daemon's: the work tree at /work/repo,
    out/ at /work/out (the prompt file in it), the agent home mounted at its place."""
    repo, out = base / "repo", base / "out"
    if not repo.exists():
        make_repo(repo)
    out.mkdir(parents=True)
    (out / "prompt.txt").write_text(prompt)
    home = home if home is not None else new_home(base / "home", chat)
    for folder in (base, repo, out, home):
        chown(folder)
    proxy = chat.proxy_url
    environment = {
        **opencode.FIXED_ENV,
        "PROMPT_FILE": "/work/out/prompt.txt",
        opencode.HOME_ENV: opencode.HOME,
        "SCRIPTED_API_KEY": SECRET,
        "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "https_proxy": proxy,
        "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
        **(env or {}),
    }  # fmt: skip
    container = client.containers.run(
        image,
        entrypoint=["/usr/local/lib/watcherd/agent", "run"],
        user=f"{UID}:{UID}",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        read_only=True,
        tmpfs={"/tmp": "", "/home/codex": f"uid={UID},gid={UID},mode=0700"},
        network_mode="host",
        working_dir="/work/repo",
        environment=environment,
        volumes={
            str(repo): {"bind": "/work/repo", "mode": "rw"},
            str(out): {"bind": "/work/out", "mode": "rw"},
            str(home): {"bind": opencode.HOME, "mode": "rw"},
        },
        labels={"watcherd.test": "opencode"},
        detach=True,
    )
    try:
        code = container.wait(timeout=120)["StatusCode"]
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    # Nothing but the model server was asked for anything.
    assert chat.unexpected() == [], [(r.method, r.path) for r in chat.unexpected()]
    return Run(code, out, home, repo, logs)


def test_a_tool_call_edits_the_work_tree_and_outputs_are_complete(
    docker_client: docker.DockerClient, image: str, chat: ChatModel, tmp_path: Path
) -> None:
    command = "echo hello > NEW.md && cat NEW.md && env > /work/out/env.txt"
    chat.steps += [Step("tool", command, say="Adding it."), Step("message", "Added NEW.md.")]
    run = run_hook(docker_client, image, chat, tmp_path, "add NEW.md")
    assert run.code == 0, run.run_log() + run.logs
    assert (run.repo / "NEW.md").read_text() == "hello\n"
    # OpenCode's events, the last message (exactly), the tokens of both steps and their cost.
    report = run.report()
    assert report.session_id and report.session_id.startswith("ses_")
    assert report.usage == opencode.Usage(22, 14, pytest.approx(0.00005))
    assert report.error is None
    assert (run.out / "last-message.md").read_text() == "Added NEW.md."
    assert report.last_message == "Added NEW.md."
    # The title was asked for first, then the two steps; the command's output went back.
    assert [r.kind for r in chat.requests] == ["title", "step", "step"]
    assert "hello" in json.dumps(chat.step_requests()[1]["messages"][-1])
    assert has_tool_output(chat.step_requests()[1])
    # The key reached OpenCode, but not the commands it ran (the shell.env plugin).
    assert all(r.headers["Authorization"] == f"Bearer {SECRET}" for r in chat.requests)
    env = (run.out / "env.txt").read_text()
    assert SECRET not in env and "SCRIPTED_API_KEY=\n" in env
    assert "OPENCODE_DISABLE_MODELS_FETCH=1" in env  # the hook's offline settings held
    # The repository's AGENTS.md reached the model, although project config is off.
    assert INSTRUCTIONS in json.dumps(chat.step_requests()[0]["messages"][0])
    # No npm install at start: the image's @opencode-ai/plugin is linked in.
    assert os.readlink(run.home / "config/opencode/node_modules").startswith("/opt/opencode/")


def test_a_failing_model_fails_the_run_with_its_reason(
    docker_client: docker.DockerClient, image: str, chat: ChatModel, tmp_path: Path
) -> None:
    chat.steps += [Step("fail", "the scripted model refuses")]
    run = run_hook(docker_client, image, chat, tmp_path, "hello")
    assert run.code == 1, run.run_log() + run.logs
    report = run.report()
    assert report.error == "the scripted model refuses"
    assert report.session_id and report.usage is None and report.last_message is None
    assert not (run.out / "last-message.md").exists()


@pytest.mark.parametrize("prompt", ["--version", "- fix the test\n"])
def test_the_prompt_reaches_the_model_literally(
    docker_client: docker.DockerClient, image: str, chat: ChatModel, tmp_path: Path,
    prompt: str,
) -> None:  # fmt: skip
    chat.steps += [Step("message", "Done.")]
    run = run_hook(docker_client, image, chat, tmp_path, prompt)
    assert run.code == 0, run.run_log() + run.logs
    assert [user_texts(r) for r in chat.step_requests()] == [[prompt]]
    assert (run.out / "last-message.md").read_text() == "Done."


def test_a_later_run_resumes_the_session(
    docker_client: docker.DockerClient, image: str, chat: ChatModel, tmp_path: Path
) -> None:
    chat.steps += [Step("message", "First answer.")]
    first = run_hook(docker_client, image, chat, tmp_path / "1", "first prompt")
    assert first.code == 0, first.run_log()
    session = first.report().session_id
    assert session is not None

    # The same home, the session's id: OpenCode sends the earlier conversation.
    chat.steps += [Step("message", "Second answer.")]
    second = run_hook(docker_client, image, chat, tmp_path / "2", "second prompt",
                      home=first.home, env={"AGENT_RESUME": session})  # fmt: skip
    assert second.code == 0, second.run_log()
    assert second.report().session_id == session
    conversation = [(m["role"], m["content"]) for m in chat.step_requests()[-1]["messages"][1:]]
    assert conversation == [
        ("user", "first prompt"),
        ("assistant", "First answer."),
        ("user", "second prompt"),
    ]
    assert [r.kind for r in chat.requests].count("title") == 1  # titled once

    # A fresh home with only the session files copied in, as the daemon does.
    home = new_home(tmp_path / "3-home", chat)
    for name in opencode.SESSION_FILES:
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(second.home / name, home / name)
    chat.steps += [Step("message", "Third answer.")]
    third = run_hook(docker_client, image, chat, tmp_path / "3", "third prompt", home=home,
                     env={"AGENT_RESUME": session})  # fmt: skip
    assert third.code == 0, third.run_log()
    texts = user_texts(chat.step_requests()[-1])
    assert texts == ["first prompt", "second prompt", "third prompt"]


def test_an_unknown_session_fails_the_run(
    docker_client: docker.DockerClient, image: str, chat: ChatModel, tmp_path: Path
) -> None:
    run = run_hook(docker_client, image, chat, tmp_path, "hello",
                   env={"AGENT_RESUME": "ses_doesnotexist1234"})  # fmt: skip
    assert run.code == 1
    assert "Session not found" in run.run_log()
    assert chat.requests == []


def test_the_recording_proxy_sees_what_tries_to_leave(
    docker_client: docker.DockerClient, image: str, chat: ChatModel, tmp_path: Path
) -> None:
    """The check every run makes is not vacuous: a fetch of another host, made by the
    Bun runtime inside OpenCode's binary as OpenCode's own fetches are, is recorded."""
    fetch = "await fetch('https://example.com/leak').catch(() => {})"
    chat.steps += [Step("tool", f'BUN_BE_BUN=1 opencode -e "{fetch}"'), Step("message", "ok")]
    with pytest.raises(AssertionError, match=r"CONNECT', 'example.com:443'"):
        run_hook(docker_client, image, chat, tmp_path, "fetch")


def test_the_hook_prints_opencode_s_version(docker_client: docker.DockerClient, image: str) -> None:
    output = docker_client.containers.run(
        image, ["--version"], entrypoint=["/usr/local/lib/watcherd/agent"],
        user=f"{UID}:{UID}", cap_drop=["ALL"],
        security_opt=["no-new-privileges"], read_only=True, tmpfs={"/tmp": ""},
        network_mode="none", remove=True,
    )  # fmt: skip
    assert output.decode() == f"{opencode.VERSION}\n"
