"""Gemini CLI's stream-json events into the common record, on streams recorded from the real
CLI (tests/fixtures/gemini/README.md says how) and on what an agent could write instead."""

from __future__ import annotations

import json
from pathlib import Path

from watcherd.agents.gemini import AgentReport, Usage, read_events

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gemini"


def report_of(name: str) -> AgentReport:
    return read_events((FIXTURES / name).read_text().splitlines())


def test_a_run_with_tool_calls() -> None:
    report = report_of("tool-calls.jsonl")
    assert report == AgentReport(
        session_id="ff0e9633-406e-40e3-82e4-1eb704142fc3",
        usage=Usage(input_tokens=33, output_tokens=21, cost_usd=None),
        last_message="Added NEW.md; the folder you named does not exist.",
        error=None,
    )


def test_a_model_failure_gives_the_api_error() -> None:
    report = report_of("model-failure.jsonl")
    assert report.error is not None and "the scripted model refuses" in report.error
    assert report.usage == Usage(input_tokens=11, output_tokens=7)
    assert report.last_message is None  # nothing said after the tool call
    assert report.session_id == "6d24dd19-365a-4ae3-b140-3f0c27166078"


def test_the_turn_limit_is_an_error_and_text_before_a_tool_call_is_no_final_message() -> None:
    report = report_of("max-turns.jsonl")
    assert report.error is not None and report.error.startswith("Reached max session turns")
    assert report.last_message is None


def test_the_final_message_is_the_text_after_the_last_tool_call_in_chunks() -> None:
    events = [
        {"type": "init", "session_id": "s1"},
        {"type": "message", "role": "user", "content": "hi"},
        {"type": "message", "role": "assistant", "content": "Looking", "delta": True},
        {"type": "tool_use", "tool_name": "run_shell_command", "tool_id": "t1"},
        {"type": "tool_result", "tool_id": "t1", "status": "success", "output": "x"},
        {"type": "message", "role": "assistant", "content": "All ", "delta": True},
        {"type": "message", "role": "assistant", "content": "done.", "delta": True},
        {"type": "result", "status": "success", "stats": {"input_tokens": 5, "output_tokens": 2}},
    ]
    report = read_events([json.dumps(e) for e in events])
    assert report == AgentReport("s1", Usage(5, 2), "All done.", None)


def test_a_run_that_stopped_before_its_result() -> None:
    events = [
        {"type": "init", "session_id": "s2"},
        {"type": "error", "severity": "warning", "message": "slow"},
        {"type": "error", "severity": "error", "message": "Maximum session turns exceeded"},
    ]
    report = read_events([json.dumps(e) for e in events])
    assert report == AgentReport("s2", None, None, "Maximum session turns exceeded")
    assert read_events([]) == AgentReport()


def test_garbage_the_agent_may_have_written() -> None:
    lines = [
        "not json", "[" * 100_000, "[1, 2]", '"text"', "",
        '{"type": "init", "session_id": 7}',
        '{"type": "init", "session_id": "first"}', '{"type": "init", "session_id": "second"}',
        '{"type": "message", "role": "assistant", "content": {"text": "x"}}',
        '{"type": "result", "status": "error", "error": "not an object",'
        ' "stats": {"input_tokens": true, "output_tokens": -3}}',
    ]  # fmt: skip
    report = read_events(lines)
    assert report == AgentReport("first", Usage(0, 0), None, "the agent reported an error")
