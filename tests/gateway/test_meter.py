"""Token counts read from each provider's own responses, whatever pieces they arrive in."""

from __future__ import annotations

import json
from typing import Any

import pytest

from watcherd.gateway import meter

STREAMS: list[tuple[meter.Extract, list[dict[str, Any]], tuple[int, int]]] = [
    (meter.openai_responses, [
        {"type": "response.created", "response": {"id": "r"}},
        {"type": "response.output_text.delta", "delta": "usage is a word in the text"},
        {"type": "response.completed", "response": {"usage": {"input_tokens": 120,
                                                              "output_tokens": 30}}},
    ], (120, 30)),
    (meter.openai_chat, [
        {"choices": [{"delta": {"content": "hi"}}]},
        {"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 5}},
    ], (50, 5)),
    (meter.anthropic, [
        {"type": "message_start", "message": {"usage": {
            "input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 1}}},
        {"type": "content_block_delta", "delta": {"text": "hi"}},
        {"type": "message_delta", "usage": {"output_tokens": 42}},
    ], (100, 42)),
    (meter.gemini, [
        {"candidates": [], "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 1}},
        {"candidates": [], "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 9,
                                             "thoughtsTokenCount": 4}},
    ], (7, 13)),
]  # fmt: skip


def sse(events: list[dict[str, Any]], newline: bytes) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + newline * 2 for e in events) + (
        b"data: [DONE]" + newline * 2)  # fmt: skip


@pytest.mark.parametrize(("extract", "events", "expected"), STREAMS)
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
@pytest.mark.parametrize("piece", [1, 7, 64, 1 << 20])
def test_a_stream_is_counted_in_any_pieces(
    extract: meter.Extract, events: list[dict[str, Any]], expected: tuple[int, int],
    newline: bytes, piece: int,
) -> None:  # fmt: skip
    body = sse(events, newline)
    counter = meter.Meter(extract, streamed=True)
    for at in range(0, len(body), piece):
        counter.feed(body[at : at + piece])
    tokens = counter.finish()
    assert (tokens.input, tokens.output) == expected


def test_a_json_body_is_counted_and_garbage_is_ignored() -> None:
    counter = meter.Meter(meter.openai_chat, streamed=False)
    counter.feed(b'{"usage": {"prompt_tokens": 3, ')
    counter.feed(b'"completion_tokens": 4}}')
    assert counter.finish() == meter.Tokens(3, 4)
    for junk in (b"not json", b"[1,2]", b'{"usage": {"prompt_tokens": -5}}', b"{" * 100000):
        counter = meter.Meter(meter.openai_chat, streamed=False)
        counter.feed(junk)
        assert counter.finish() == meter.Tokens(0, 0)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
@pytest.mark.parametrize("piece", [1, 5, 1 << 20])
def test_a_last_event_left_unended_is_still_counted(newline: bytes, piece: int) -> None:
    """A stream cut after its usage event's data line, before the blank line."""
    body = sse([{"type": "response.output_text.delta", "delta": "x" * 300}], newline)
    body += b'data: {"type": "response.completed", "response": {"usage": '
    body += b'{"input_tokens": 11, "output_tokens": 5}}}' + newline
    counter = meter.Meter(meter.openai_responses, streamed=True)
    for at in range(0, len(body), piece):
        counter.feed(body[at : at + piece])
    assert counter.finish() == meter.Tokens(11, 5)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
@pytest.mark.parametrize("memmem", [True, False])
def test_big_events_are_counted_wherever_their_pieces_are_cut(
    newline: bytes, memmem: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk stream is searched in the pieces it comes in, big ones by the C library's
    memmem (or bytes.find without it): a cut may fall in the usage key, in an event's end,
    or leave a piece of an event of its own."""
    if not memmem:
        monkeypatch.setattr(meter, "_memmem", None)
    elif meter._memmem is None:
        pytest.skip("no memmem in this C library")
    text = {"type": "response.output_text.delta", "delta": "usage: word " * 2000}
    done = {
        "type": "response.completed",
        "response": {"usage": {"input_tokens": 7, "output_tokens": 3}},
    }
    body = sse([text, text, done, text], newline)
    key, end = body.index(b'"usage"'), body.index(newline * 2, body.index(b'"usage"'))
    cuts = [[c] for c in (*range(key - 2, key + 8), *range(end - 2, end + 4))]
    cuts += [list(range(size, len(body), size)) for size in (8191, 10_000, 16_384, 65_536)]
    for at in cuts:
        counter = meter.Meter(meter.openai_responses, streamed=True)
        for start, stop in zip([0, *at], [*at, len(body)], strict=True):
            counter.feed(body[start:stop])
        assert counter.finish() == meter.Tokens(7, 3), at


def test_names_usage_is_bytes_find() -> None:
    random = __import__("random").Random(5)
    for size in (0, 5, 6, 100, 8191, 8192, 20_000):
        data = bytearray(random.choice(b'"usagex') for _ in range(size))
        for _ in range(20):
            start, end = sorted(random.randrange(size + 1) for _ in range(2))
            got = meter.names_usage(bytes(data), start, end)
            assert got == (data.find(meter.USAGE_KEY, start, end) >= 0), (size, start, end)
        assert meter.names_usage(bytes(data)) == (meter.USAGE_KEY in data)
        if size > 6:
            data[size - 6 :] = meter.USAGE_KEY
            assert meter.names_usage(bytes(data))
            assert not meter.names_usage(bytes(data), 0, size - 1)
