"""Gemini CLI through the daemon: the real CLI in its image, a scripted Gemini API on
127.0.0.1, the same outputs as every agent. Needs `watcherd image build gemini`."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.gemini_server import ScriptedGemini, Step
from tests.support.git_server import GitServer
from tests.support.helpers import DaemonProcess, StartDaemon, exit_record, wait_finished, write_job
from watcherd.agents.gemini import IMAGE

pytestmark = [pytest.mark.docker]


@pytest.fixture
def gemini_api() -> Iterator[ScriptedGemini]:
    server = ScriptedGemini(steps=[], lifetime=300).start()
    yield server
    server.stop()


@pytest.fixture
def gemini_daemon(
    start_daemon: StartDaemon, gemini_api: ScriptedGemini, tmp_path: Path,
    docker_client: docker.DockerClient,
) -> Callable[..., DaemonProcess]:  # fmt: skip
    docker_client.images.get(IMAGE)  # built by .ci/run (watcherd image build all)
    key_file = tmp_path / "gemini.env"
    key_file.write_text("GEMINI_API_KEY=gemini-test-key\n")
    key_file.chmod(0o600)

    def start(**overrides: Any) -> DaemonProcess:
        return start_daemon(
            auth_mode="none", network_mode="host", allowed_protocols=["git"],
            default_timeout=120, default_agent="gemini",
            agents={"gemini": {"api_key_file": str(key_file),
                               "env": {"GOOGLE_GEMINI_BASE_URL": gemini_api.base_url}}},
            **overrides,
        )  # fmt: skip

    return start


def test_gemini_edits_the_repository_on_its_branch(
    work_root: Path, gemini_daemon: Callable[..., DaemonProcess], gemini_api: ScriptedGemini,
    git_server: GitServer,
) -> None:  # fmt: skip
    gemini_api.steps += [Step("tool", "echo hello > NEW.md"), Step("message", "Added NEW.md.")]
    gemini_daemon()
    write_job(work_root / "inbox", "edit.yaml", repo_url=git_server.url("demo.git"),
              prompt="add NEW.md", model="scripted-model", retries=0)  # fmt: skip
    folder, path = wait_finished(work_root, "edit.yaml", timeout=120)
    out = work_root / "out" / path.name.removesuffix(".yaml")
    record = exit_record(work_root, path)
    assert folder == "done", (record["reason"], (out / "run.log").read_text())
    assert record["agent"] == "gemini" and record["agent_version"] == "0.61.0"
    assert record["session_id"] and record["usage"]["input_tokens"] > 0
    shown = subprocess.run(
        ["git", "--git-dir", record["results_repo"], "show", f"{record['branch']}:NEW.md"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shown.stdout == "hello\n"
    assert "+hello" in (out / "changes.patch").read_text()
    assert "Added NEW.md." in (out / "last-message.md").read_text()
    assert (out / "sessions" / "tmp").is_dir()  # its chats, for a resume


def test_a_failing_model_fails_the_job_with_the_agents_reason(
    work_root: Path, gemini_daemon: Callable[..., DaemonProcess], gemini_api: ScriptedGemini,
    git_server: GitServer,
) -> None:  # fmt: skip
    gemini_api.steps += [Step("fail", "the scripted model refuses")]
    gemini_daemon()
    write_job(work_root / "inbox", "fail.yaml", repo_url=git_server.url("demo.git"),
              prompt="x", model="scripted-model", retries=0)  # fmt: skip
    folder, path = wait_finished(work_root, "fail.yaml", timeout=120)
    record = exit_record(work_root, path)
    assert (folder, record["state"]) == ("failed", "failed")
    assert "gemini exited with code" in record["reason"]
    assert "the scripted model refuses" in record["reason"]


def test_a_hostile_gemini_reaches_no_other_home_nor_the_inbox(
    work_root: Path, gemini_daemon: Callable[..., DaemonProcess], gemini_api: ScriptedGemini,
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
    gemini_api.steps += [Step("tool", attack), Step("message", "done")]
    gemini_daemon()
    write_job(work_root / "inbox", "evil.yaml", repo_url=git_server.url("demo.git"),
              prompt="be evil", model="scripted-model", retries=0)  # fmt: skip
    folder, path = wait_finished(work_root, "evil.yaml", timeout=120)
    out = work_root / "out" / path.name.removesuffix(".yaml")
    assert folder == "done", (out / "run.log").read_text()
    assert not (work_root / "inbox" / "pwn.yaml").exists()
    assert (out / "grep.txt").read_text() == ""  # another job's home is nowhere in reach
    assert "gemini-test-key" not in (out / "env.txt").read_text()  # redacted from commands
