"""Reading Claude Code's event stream into the common record, from recorded runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from watcherd.agents.claude import (
    MESSAGE_LIMIT,
    AgentReport,
    Usage,
    project_folder,
    read_events,
    session_paths,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "claude"


def recorded(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def lines(*events: dict[str, Any]) -> list[str]:
    return [json.dumps(event) for event in events]


SESSION = "0b5c1f52-7d0e-4a44-9b3e-2f6a1c0d9e11"
INIT = {"type": "system", "subtype": "init", "session_id": SESSION, "model": "m"}


def test_a_run_that_finished() -> None:
    assert read_events(recorded("tool-then-message.jsonl")) == AgentReport(
        session_id="94c55e90-f7f2-4aaf-be86-16964207dfff",
        usage=Usage(input_tokens=33, output_tokens=21, cost_usd=0.000552),
        last_message="Added NEW.md for you.",
        error=None,
    )


def test_a_model_that_failed() -> None:
    report = read_events(recorded("model-failure.jsonl"))
    assert report.session_id == "5f07e698-a120-4723-8c31-bdcef97e21c6"
    assert report.error == "Failed to authenticate. API Error: 403 the scripted model refuses"
    assert report.last_message is None
    assert report.usage is not None and report.usage.output_tokens == 7


def test_too_many_turns() -> None:
    report = read_events(recorded("max-turns.jsonl"))
    assert report.error == "Reached maximum number of turns (1)"
    assert report.last_message is None
    assert report.usage == Usage(11, 7, 0.00018399999999999997)


def test_cached_prompt_tokens_count_as_input() -> None:
    result = {"type": "result", "subtype": "success", "is_error": False, "result": "done",
              "usage": {"input_tokens": 5, "cache_creation_input_tokens": 100,
                        "cache_read_input_tokens": 1000, "output_tokens": 9},
              "total_cost_usd": 0.5}  # fmt: skip
    assert read_events(lines(INIT, result)).usage == Usage(1105, 9, 0.5)


def test_a_run_cut_before_its_result() -> None:
    """Killed (timeout): no result event. The usage is summed over the messages seen, each
    counted once (Claude Code writes one event per content block, repeating the usage)."""
    usage = {"input_tokens": 10, "output_tokens": 3}
    said = [{"type": "text", "text": "Looking."}]
    first = {"id": "msg_1", "model": "m", "usage": usage, "content": said}
    tool = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}
    report = read_events(lines(
        INIT,
        {"type": "assistant", "message": first},
        {"type": "assistant", "message": {**first, "content": [tool]}},
        {"type": "user", "message": {"role": "user", "content": [{"type": "tool_result"}]}},
        {"type": "assistant", "message": {**first, "id": "msg_2", "content": [
            {"type": "text", "text": "Half "}, {"type": "text", "text": "done."}]}},
    ))  # fmt: skip
    assert report == AgentReport(SESSION, Usage(20, 6), "Half done.", None)


def test_an_api_error_without_a_result() -> None:
    synthetic = {"model": "<synthetic>", "content": [{"type": "text", "text": "API Error: 500"}]}
    report = read_events(lines(INIT, {"type": "assistant", "message": synthetic,
                                      "is_api_error_message": True}))  # fmt: skip
    assert report == AgentReport(SESSION, None, None, "API Error: 500")


def test_a_run_cut_while_claude_code_retried() -> None:
    """A wrong key (401) is retried with a growing backoff: a job's timeout can come first."""
    retry = {"type": "system", "subtype": "api_retry", "attempt": 7, "max_retries": 10,
             "retry_delay_ms": 39099, "error_status": 401, "error": "authentication_failed",
             "session_id": SESSION}  # fmt: skip
    report = read_events(lines(INIT, {**retry, "attempt": 6}, retry))
    assert report.error == "authentication_failed (HTTP 401), retry 7 of 10"
    answered = {"type": "assistant", "message": {"id": "msg_1", "content": "Working."}}
    assert read_events(lines(INIT, retry, answered)).error is None


def test_a_failed_result_without_a_reason_names_its_kind() -> None:
    result = {"type": "result", "subtype": "error_during_execution", "is_error": True}
    assert read_events(lines(INIT, result)).error == "error_during_execution"


def test_nothing_usable() -> None:
    assert read_events([]) == AgentReport()
    assert read_events(["", "not json", "[1, 2]", "null", '{"type": 7}']) == AgentReport()


def test_hostile_events_are_read_not_trusted() -> None:
    """The agent can write its own stream: wrong types, a session id that is a path or an
    option, negative or boolean counts, a huge message are all made harmless."""
    report = read_events(lines(
        {"type": "system", "subtype": "init", "session_id": "../../etc/passwd"},
        {"type": "system", "subtype": "init", "session_id": "--help"},
        {"type": "assistant", "message": "text"},
        {"type": "assistant", "message": {"content": 5, "usage": [1]}},
        {"type": "result", "is_error": False, "result": "x" * (MESSAGE_LIMIT + 10),
         "session_id": 12, "usage": {"input_tokens": -5, "output_tokens": True},
         "total_cost_usd": float("nan")},
    ))  # fmt: skip
    assert report.session_id is None
    assert report.usage == Usage(0, 0, None)
    assert report.last_message is not None and len(report.last_message) == MESSAGE_LIMIT
    assert read_events(lines({"type": "result", "is_error": True, "errors": [1, None]})).error == (
        "Claude Code failed"
    )


def test_where_sessions_live() -> None:
    assert project_folder("/work/repo") == "-work-repo"
    assert project_folder("/tmp/a_b.c") == "-tmp-a-b-c"
    assert session_paths(SESSION) == (
        f"projects/-work-repo/{SESSION}.jsonl",
        f"projects/-work-repo/{SESSION}",
    )
