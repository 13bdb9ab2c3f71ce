from __future__ import annotations

import json

from watcherd.agents.codex import read_events

EVENTS = [
    {"type": "thread.started", "thread_id": "01a2-thread"},
    {"type": "turn.started"},
    {"type": "item.completed", "item": {"type": "command_execution", "command": "ls"}},
    {"type": "item.completed", "item": {"type": "agent_message", "text": "first"}},
    {"type": "turn.completed", "usage": {"input_tokens": 11, "output_tokens": 7}},
    {"type": "item.completed", "item": {"type": "agent_message", "text": "last"}},
    {"type": "turn.completed", "usage": {"input_tokens": 5, "cached_input_tokens": 3,
                                         "output_tokens": 2}},
]  # fmt: skip


def test_session_usage_summed_over_turns_and_the_last_message() -> None:
    report = read_events([json.dumps(e) for e in EVENTS])
    assert report.session_id == "01a2-thread"
    assert report.usage is not None
    assert (report.usage.input_tokens, report.usage.output_tokens) == (16, 9)
    assert report.last_message == "last"
    assert report.error is None


def test_a_failure_and_garbage_the_agent_may_have_written() -> None:
    lines = [
        '{"type": "turn.failed", "error": {"message": "model refused"}}',
        "not json", "[" * 100_000, '{"type": "turn.completed", "usage": {"input_tokens": true}}',
    ]  # fmt: skip
    report = read_events(lines)
    assert report.error == "model refused"
    assert report.usage is not None and report.usage.input_tokens == 0
