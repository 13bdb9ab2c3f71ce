"""Rendering Codex's event stream for a person, from recorded and hand-written events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from watcherd.job.events import (
    Renderer,
    Tokens,
    activity_line,
    clean,
    command_text,
    render,
    step_line,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "codex"


def recorded(name: str) -> list[Any]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def test_a_recorded_run_shows_commands_exit_codes_messages_and_tokens() -> None:
    assert render(recorded("exec-commands.jsonl")) == [
        "codex session 01a21b6a-0728-74d1-8ac7-a2eef8ef443f started",
        "warning: Model metadata for `scripted-model` not found. Defaulting to fallback "
        "metadata; this can degrade performance and cause issues.",
        "$ echo hello > NEW.md && cat NEW.md",
        "    hello",
        "  exit 0",
        "$ sleep 2; ls",
        "    NEW.md",
        "    README.md",
        "  exit 0",
        "$ echo oops >&2; false",
        "    oops",
        "  exit 1, failed",
        "agent: Added NEW.md for you.",
        "       Second line.",
        "turn done: 72 tokens this turn; so far 72 tokens (44 in, 0 cached, 28 out)",
    ]


def test_a_recorded_model_failure_ends_with_the_reason() -> None:
    lines = render(recorded("exec-model-failure.jsonl"))
    assert lines[-2:] == [
        "error: stream disconnected before completion: the scripted model refuses",
        "turn failed: stream disconnected before completion: the scripted model refuses",
    ]


def test_every_item_kind_is_rendered() -> None:
    lines = render(recorded("all-item-kinds.jsonl"))
    text = "\n".join(lines)
    assert "thinking: **Looking at the tests** then fixing" in lines
    assert lines.count("plan (1/2 done):") == 1  # an unchanged plan is not shown again
    assert "  [x] read the code" in lines
    assert "files changed: src/app.py (updated), NEW.md (added), old.txt (deleted)" in lines
    assert [line for line in lines if line.startswith("tool ")] == [
        "tool docs.search ...",
        "tool docs.search failed: server went away",
    ]
    assert "web search: pytest tmp_path fixture" in lines
    assert "    ... 15 earlier line(s)" in lines and "    20" in lines  # the output's tail
    assert "$ git status" in lines and "  declined" in lines
    assert lines[-1] == (
        "turn done: 15 tokens this turn; so far 1,065 tokens (1,010 in, 200 cached, 55 out)"
    )
    assert "future" not in text


def test_the_agents_text_cannot_drive_the_terminal() -> None:
    text = "\n".join(render(recorded("all-item-kinds.jsonl")))
    for forbidden in ("\x1b", "\x07", "\u202e", "\r"):
        assert forbidden not in text
    assert clean("a\x1b[31mred\x1b[0m\x1b]0;title\x07b\u202ec\td\x00") == "aredbc    d"


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("/bin/bash -lc ls", "ls"),
        ("/bin/bash -lc 'echo hi && ls'", "echo hi && ls"),
        ("/usr/bin/sh -c 'x'", "x"),
        ("/bin/bash -lc 'unterminated", "/bin/bash -lc 'unterminated"),
        (["git", "status", "--short"], "git status --short"),
        ("python3 -m pytest", "python3 -m pytest"),
        (None, ""),
    ],
)
def test_command_text_unwraps_codexs_shell(command: object, shown: str) -> None:
    assert command_text(command) == shown


def test_a_command_started_and_completed_is_shown_once_with_its_exit() -> None:
    renderer = Renderer()
    started = {"type": "item.started", "item": {"id": "i", "type": "command_execution",
               "command": "sleep 2", "status": "in_progress"}}  # fmt: skip
    completed = {"type": "item.completed", "item": {"id": "i", "type": "command_execution",
                 "command": "sleep 2", "aggregated_output": "", "exit_code": 0}}  # fmt: skip
    assert renderer.feed(started) == ["$ sleep 2"]  # shown live, while it runs
    assert renderer.feed(completed) == ["  exit 0"]


def test_tokens_add_up_over_turns_and_ignore_nonsense() -> None:
    tokens = Tokens()
    tokens.add({"input_tokens": 10, "cached_input_tokens": 4, "output_tokens": 3})
    tokens.add({"input_tokens": "many", "output_tokens": True})
    tokens.add(None)
    assert (tokens.total, tokens.cached_input, tokens.turns) == (13, 4, 2)


def test_step_lines_are_one_line_per_finished_step() -> None:
    steps = [line for line in map(step_line, recorded("exec-commands.jsonl")) if line]
    assert steps == [
        "ran echo hello > NEW.md && cat NEW.md (exit 0)",
        "ran sleep 2; ls (exit 0)",
        "ran echo oops >&2; false (exit 1, failed)",
        "said: Added NEW.md for you. Second line.",
        "turn done, 72 tokens (44 in, 0 cached, 28 out)",
    ]
    long = {"type": "item.completed", "item": {"type": "agent_message", "text": "x\n" * 1000}}
    line = step_line(long)
    assert line is not None and "\n" not in line and len(line) < 220


def test_activity_includes_a_command_still_running() -> None:
    started = {"type": "item.started", "item": {"type": "command_execution",
               "command": "/bin/bash -lc 'sleep 2; ls'"}}  # fmt: skip
    assert activity_line(started) == "running sleep 2; ls"
    assert activity_line({"type": "turn.started"}) is None
