"""OpenCode through the daemon: the real binary in its image, a scripted Chat Completions
API on 127.0.0.1 (a provider of the operator's config), the same outputs as every agent.
Needs `watcherd image build opencode`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.git_server import GitServer
from tests.support.helpers import DaemonProcess, StartDaemon, exit_record, wait_finished, write_job
from tests.support.openai_chat_server import ChatModel, Step, opencode_config
from watcherd.agents.opencode import CONFIG_FILES, IMAGE

pytestmark = [pytest.mark.docker]


@pytest.fixture
def chat() -> Iterator[ChatModel]:
    server = ChatModel(steps=[]).start()
    yield server
    server.stop()


@pytest.fixture
def opencode_daemon(
    start_daemon: StartDaemon, chat: ChatModel, tmp_path: Path,
    docker_client: docker.DockerClient,
) -> Callable[..., DaemonProcess]:  # fmt: skip
    docker_client.images.get(IMAGE)  # built by .ci/run (watcherd image build all)
    operator = tmp_path / "opencode-bot"  # the operator's OpenCode config: the provider
    config = operator / CONFIG_FILES[0]
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps(opencode_config(chat.base_url)))

    def start(**overrides: Any) -> DaemonProcess:
        return start_daemon(
            auth_mode="none", network_mode="host", allowed_protocols=["git"],
            default_timeout=120, default_agent="opencode",
            extra_env={"SCRIPTED_API_KEY": "scripted-test-key"},
            agents={"opencode": {"config_dir": str(operator)}},
            **overrides,
        )  # fmt: skip

    return start


def test_opencode_edits_the_repository_on_its_branch(
    work_root: Path, opencode_daemon: Callable[..., DaemonProcess], chat: ChatModel,
    git_server: GitServer,
) -> None:  # fmt: skip
    chat.steps += [Step("tool", "echo hello > NEW.md"), Step("message", "Added NEW.md.")]
    opencode_daemon()
    write_job(work_root / "inbox", "edit.yaml", repo_url=git_server.url("demo.git"),
              prompt="add NEW.md", retries=0)  # fmt: skip
    folder, path = wait_finished(work_root, "edit.yaml", timeout=120)
    out = work_root / "out" / path.name.removesuffix(".yaml")
    record = exit_record(work_root, path)
    assert folder == "done", (record["reason"], (out / "run.log").read_text())
    assert record["agent"] == "opencode" and record["agent_version"] == "1.18.33"
    assert record["session_id"] and record["usage"]["input_tokens"] > 0
    shown = subprocess.run(
        ["git", "--git-dir", record["results_repo"], "show", f"{record['branch']}:NEW.md"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shown.stdout == "hello\n"
    assert "+hello" in (out / "changes.patch").read_text()
    assert "Added NEW.md." in (out / "last-message.md").read_text()
    assert (out / "sessions" / "data" / "opencode" / "opencode.db").is_file()  # for a resume


def test_a_failing_model_fails_the_job_with_the_agents_reason(
    work_root: Path, opencode_daemon: Callable[..., DaemonProcess], chat: ChatModel,
    git_server: GitServer,
) -> None:  # fmt: skip
    chat.steps += [Step("fail", "the scripted model refuses")]
    opencode_daemon()
    write_job(work_root / "inbox", "fail.yaml", repo_url=git_server.url("demo.git"),
              prompt="x", retries=0)  # fmt: skip
    folder, path = wait_finished(work_root, "fail.yaml", timeout=120)
    record = exit_record(work_root, path)
    assert (folder, record["state"]) == ("failed", "failed")
    assert "opencode exited with code" in record["reason"]
    assert "the scripted model refuses" in record["reason"]


def test_a_hostile_opencode_reaches_no_other_home_nor_the_inbox(
    work_root: Path, opencode_daemon: Callable[..., DaemonProcess], chat: ChatModel,
    git_server: GitServer,
) -> None:  # fmt: skip
    other_home = work_root / "homes" / "20261127T000000Z-other-aaaaaa"
    other_home.mkdir(parents=True)
    (other_home / "settings.json").write_text('{"secret": "OTHER-JOBS-HOME"}')
    attack = (
        "touch /work/inbox/pwn.yaml 2> /work/out/inbox.txt; "
        "grep -rl 'OTHER-JOBS-''HOME' / --exclude-dir=proc --exclude-dir=sys > /work/out/grep.txt "
        "2>/dev/null; ls -a /home/codex > /work/out/home.txt; env > /work/out/env.txt; true"
    )
    chat.steps += [Step("tool", attack), Step("message", "done")]
    opencode_daemon()
    write_job(work_root / "inbox", "evil.yaml", repo_url=git_server.url("demo.git"),
              prompt="be evil", retries=0)  # fmt: skip
    folder, path = wait_finished(work_root, "evil.yaml", timeout=120)
    out = work_root / "out" / path.name.removesuffix(".yaml")
    assert folder == "done", (out / "run.log").read_text()
    assert not (work_root / "inbox" / "pwn.yaml").exists()
    assert (out / "grep.txt").read_text() == ""  # another job's home is nowhere in reach
    assert "scripted-test-key" not in (out / "env.txt").read_text()  # hidden from commands
