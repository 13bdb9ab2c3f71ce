"""Reading OpenCode's event stream: recorded runs of the real OpenCode, and hand-written
events for what the scripted model cannot make it write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from watcherd.agents.opencode import AgentReport, Usage, read_events

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "opencode"
SESSION = "ses_de4696cd8ffe371JyFovb5rUVu"


def recorded(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def lines(*events: dict[str, Any]) -> list[str]:
    return [json.dumps(event) for event in events]


def step_finish(tokens: Any, cost: Any = 0, session: str = SESSION) -> dict[str, Any]:
    part = {"type": "step-finish", "messageID": "msg_1", "tokens": tokens, "cost": cost}
    return {"type": "step_finish", "sessionID": session, "part": part}


def text(message: str, words: str, session: str = SESSION) -> dict[str, Any]:
    part = {"type": "text", "messageID": message, "text": words}
    return {"type": "text", "sessionID": session, "part": part}


def test_a_recorded_run_with_commands_gives_session_tokens_cost_and_last_message() -> None:
    # Three steps (two bash calls, the second failing, then a message), each 11 tokens in
    # and 7 out, priced at $1 and $2 per million tokens.
    report = read_events(recorded("run-edit.jsonl"))
    assert report == AgentReport(
        session_id=SESSION,
        usage=Usage(input_tokens=33, output_tokens=21, cost_usd=pytest.approx(0.000075)),
        last_message="Added NEW.md for you.",  # not "Let me add the file." of the first step
        error=None,
    )


def test_a_recorded_resumed_run_keeps_the_session_id() -> None:
    report = read_events(recorded("run-resumed.jsonl"))
    assert report.session_id == SESSION
    assert report.usage == Usage(11, 7, pytest.approx(0.000025))
    assert report.last_message == "NEW.md says hello."


def test_a_recorded_model_failure_gives_the_reason() -> None:
    report = read_events(recorded("run-model-failure.jsonl"))
    assert report == AgentReport(
        session_id="ses_de46932d8ffeRBRcKc6nktBVJA",
        usage=None,
        last_message=None,
        error="the scripted model refuses",
    )


def test_nothing_read_is_an_empty_report() -> None:
    assert read_events([]) == AgentReport()
    assert read_events(["", "   "]) == AgentReport()


def test_cached_input_and_reasoning_count_as_tokens() -> None:
    # OpenCode's "input" leaves out cached tokens and its "output" leaves out reasoning.
    tokens = {"input": 100, "output": 20, "reasoning": 30, "cache": {"read": 400, "write": 5}}
    report = read_events(lines(step_finish(tokens, 0.5), step_finish(tokens, 0.25)))
    assert report.usage == Usage(input_tokens=1010, output_tokens=100, cost_usd=0.75)


def test_what_is_not_an_event_is_skipped() -> None:
    good = step_finish({"input": 1, "output": 2}, 0.1)
    stream = [
        "not json",
        "[1, 2]",
        '"a string"',
        "null",
        json.dumps(good),
        json.dumps(good)[:25],  # a last line cut short
    ]
    assert read_events(stream).usage == Usage(1, 2, 0.1)


@pytest.mark.parametrize(
    "tokens",
    [
        None,
        "many",
        {"input": True, "output": -5, "reasoning": "9", "cache": {"read": 1.5, "write": None}},
        {"cache": [1, 2]},
    ],
)
def test_tokens_of_the_wrong_kind_count_as_none(tokens: Any) -> None:
    report = read_events(lines(step_finish(tokens, cost=None)))
    assert report.usage == Usage(0, 0, None)  # a step was made: usage, without a cost


@pytest.mark.parametrize("cost", [None, "0.1", True, -1, [0.1]])
def test_a_cost_of_the_wrong_kind_is_left_out(cost: Any) -> None:
    report = read_events(lines(step_finish({"input": 1}, cost), step_finish({"input": 1}, 0.2)))
    assert report.usage == Usage(2, 0, 0.2)


def test_no_cost_at_all_is_none_not_zero() -> None:
    event = step_finish({"input": 3, "output": 4})
    del event["part"]["cost"]
    assert read_events(lines(event)).usage == Usage(3, 4, None)


def test_the_last_message_is_every_text_part_of_the_last_message_with_text() -> None:
    stream = lines(
        text("msg_1", "Looking."),
        text("msg_2", "First part."),
        {"type": "tool_use", "sessionID": SESSION, "part": {"messageID": "msg_2", "tool": "bash"}},
        text("msg_2", "Second part."),
        {"type": "step_finish", "sessionID": SESSION, "part": {"messageID": "msg_3"}},
    )
    assert read_events(stream).last_message == "First part.\n\nSecond part."


@pytest.mark.parametrize(
    "part",
    [None, "text", {"text": "no message id"}, {"messageID": "msg_1", "text": 42}],
)
def test_text_parts_of_the_wrong_kind_are_skipped(part: Any) -> None:
    stream = [json.dumps({"type": "text", "sessionID": SESSION, "part": part})]
    assert read_events(stream).last_message is None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ({"name": "APIError", "data": {"message": "quota exceeded"}}, "quota exceeded"),
        ({"name": "ProviderAuthError", "data": {"providerID": "openai"}}, "ProviderAuthError"),
        ({"name": "UnknownError", "data": {"message": "  "}}, "UnknownError"),
        ({"message": "Session not found"}, "Session not found"),
        ("plain words", "plain words"),
        ({}, None),
        (None, None),
        (7, None),
    ],
)
def test_the_error_is_opencodes_message_else_its_name(error: Any, reason: str | None) -> None:
    stream = [json.dumps({"type": "error", "sessionID": SESSION, "error": error})]
    assert read_events(stream).error == reason


def test_the_last_error_is_the_reason() -> None:
    first = {"type": "error", "error": {"name": "APIError", "data": {"message": "first"}}}
    last = {"type": "error", "error": {"name": "APIError", "data": {"message": "last"}}}
    empty = {"type": "error", "error": {}}
    assert read_events(lines(first, last, empty)).error == "last"


@pytest.mark.parametrize(
    "session",
    [None, 42, "", "--version", "ses_", "ses_../../etc", "ses_a b", "x" * 40, "ses_" + "a" * 200],
)
def test_only_a_plain_session_id_is_kept_for_resuming(session: Any) -> None:
    # The id goes back to the hook as AGENT_RESUME: nothing that could be read otherwise.
    stream = lines({"type": "step_start", "sessionID": session, "part": {}})
    assert read_events(stream).session_id is None


def test_the_first_session_id_is_the_run_s() -> None:
    stream = lines(
        {"type": "step_start", "sessionID": "nonsense", "part": {}},
        {"type": "step_start", "sessionID": "ses_first1", "part": {}},
        {"type": "step_start", "sessionID": "ses_second2", "part": {}},
    )
    assert read_events(stream).session_id == "ses_first1"
