"""The OpenCode run hook's own logic, run by bash on this machine (no image): its checks of
the inputs, the config it writes for a job, the home it prepares and the last message it
extracts (the same as read_events finds)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from watcherd.agents.opencode import read_events

ROOT = Path(__file__).resolve().parent.parent.parent
HOOK = ROOT / "image" / "opencode" / "agent"
FIXTURES = ROOT / "tests" / "fixtures" / "opencode"

pytestmark = pytest.mark.skipif(shutil.which("jq") is None, reason="the hook needs jq")


def source(
    script: str, cwd: Path, *args: str, hook_file: Path = HOOK
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in bash with the hook's functions loaded; $1... are ``args``."""
    return subprocess.run(
        ["bash", "-c", f'hook=$1; shift; . "$hook"; {script}', "bash", str(hook_file), *args],
        cwd=cwd, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def hook(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "OUT": str(tmp_path / "out")}
    return subprocess.run(
        ["bash", str(HOOK), *args], cwd=tmp_path, env={**base, **env},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["run-edit.jsonl", "run-resumed.jsonl", "run-model-failure.jsonl"])
def test_the_hook_extracts_the_last_message_as_read_events_does(tmp_path: Path, name: str) -> None:
    target = tmp_path / "last-message.md"
    result = source('last_message "$1" "$2"', tmp_path, str(FIXTURES / name), str(target))
    assert result.returncode == 0, result.stderr
    expected = read_events((FIXTURES / name).read_text().splitlines()).last_message
    if expected is None:
        assert not target.exists() and not (tmp_path / "last-message.md.tmp").exists()
    else:
        assert target.read_text() == expected  # exactly: no newline added


def test_the_last_message_joins_the_parts_of_the_last_message(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    parts = [("msg_1", "Looking."), ("msg_2", "First part,"), ("msg_2", "second part.\n")]
    events.write_text(
        "not json\n"
        + "".join(
            json.dumps({"type": "text", "part": {"messageID": m, "text": t}}) + "\n"
            for m, t in parts
        )
    )
    source('last_message "$1" "$2"', tmp_path, str(events), str(tmp_path / "last.md"))
    assert (tmp_path / "last.md").read_text() == "First part,\n\nsecond part.\n"


def test_the_job_config_brings_the_repository_s_instructions_and_steps(tmp_path: Path) -> None:
    (tmp_path / "CLAUDE.md").write_text("claude")
    result = source('job_config ""', tmp_path)
    assert json.loads(result.stdout) == {"instructions": [str(tmp_path / "CLAUDE.md")]}
    (tmp_path / "AGENTS.md").write_text("agents")  # the first of AGENTS.md, CLAUDE.md, ...
    result = source("job_config 12", tmp_path)
    assert json.loads(result.stdout) == {
        "instructions": [str(tmp_path / "AGENTS.md")],
        "agent": {"build": {"steps": 12}},
    }


def test_the_job_config_is_empty_without_instructions_or_steps(tmp_path: Path) -> None:
    (tmp_path / "AGENTS.md").mkdir()  # not a file
    assert json.loads(source('job_config ""', tmp_path).stdout) == {}


def test_the_config_folder_gets_the_image_s_plugin_dependencies(tmp_path: Path) -> None:
    deps = tmp_path / "deps"
    (deps / "node_modules").mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        (deps / name).write_text(name)
    config = tmp_path / "config"
    config.mkdir()
    script = f'PLUGIN_DEPS="{deps}"; seed_config "$1"'
    # readonly in the hook: run it in a copy where the path can be changed.
    patched = tmp_path / "agent"
    patched.write_text(HOOK.read_text().replace("readonly PLUGIN_DEPS=", "PLUGIN_DEPS="))
    result = source(script, tmp_path, str(config), hook_file=patched)
    assert result.returncode == 0, result.stderr
    assert os.readlink(config / "node_modules") == str(deps / "node_modules")
    assert (config / "package-lock.json").read_text() == "package-lock.json"
    # An operator's own package.json (their plugins) is left as it is.
    own = tmp_path / "own"
    own.mkdir()
    (own / "package.json").write_text("{}")
    assert source(script, tmp_path, str(own), hook_file=patched).returncode == 0
    assert sorted(p.name for p in own.iterdir()) == ["package.json"]


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"PROMPT_FILE": None}, "PROMPT_FILE must name a readable file"),
        ({"PROMPT_FILE": "/nonexistent"}, "PROMPT_FILE must name a readable file"),
        ({"PROMPT_FILE": "{tmp}"}, "PROMPT_FILE must name a readable file"),  # a folder
        ({"PROMPT_FILE": "{tmp}/empty.txt"}, "the prompt is empty"),
        ({"AGENT_RESUME": "--version"}, "AGENT_RESUME must be an OpenCode session id"),
        ({"AGENT_RESUME": "ses_1 --help"}, "AGENT_RESUME must be an OpenCode session id"),
        ({"AGENT_MODEL": "--help"}, "AGENT_MODEL must be provider/model"),
        ({"AGENT_MODEL": "gpt-5"}, "AGENT_MODEL must be provider/model"),
        ({"AGENT_MAX_TURNS": "0"}, "AGENT_MAX_TURNS must be a whole number"),
        ({"AGENT_MAX_TURNS": "3; rm"}, "AGENT_MAX_TURNS must be a whole number"),
        ({"AGENT_FLAGS": "--agent 'plan"}, "AGENT_FLAGS cannot be split"),
    ],
)
def test_bad_inputs_stop_the_hook_before_opencode_runs(
    tmp_path: Path, env: dict[str, str | None], reason: str
) -> None:
    (tmp_path / "prompt.txt").write_text("hello")
    (tmp_path / "empty.txt").write_text("")
    values = {"PROMPT_FILE": str(tmp_path / "prompt.txt"), **env}
    given = {k: v.replace("{tmp}", str(tmp_path)) for k, v in values.items() if v is not None}
    result = hook(tmp_path, given, "run")
    assert (result.returncode, result.stdout) == (64, ""), result.stderr
    assert reason in result.stderr
    assert not (tmp_path / ".opencode-home").exists()  # nothing prepared, nothing run


def test_the_hook_knows_two_commands(tmp_path: Path) -> None:
    for args in ((), ("help",), ("--help",), ("exec",)):
        result = hook(tmp_path, {}, *args)
        assert result.returncode == 64
        assert "usage: agent --version | agent run" in result.stderr
