"""Token counts from an upstream's own responses, read as they stream through.

A meter is fed the response body in whatever pieces it arrives (an SSE stream or one JSON
document) and keeps the latest counts the provider reported. It never changes a byte and
never fails: what it cannot read it ignores. Each provider reports its usage its own way:

- OpenAI Responses: ``usage`` of ``response.completed`` (``input_tokens``, ``output_tokens``)
- OpenAI chat completions: ``usage`` (``prompt_tokens``, ``completion_tokens``), in the last
  chunk of a stream when ``stream_options.include_usage`` is on (the gateway turns it on)
- Anthropic Messages: ``message_start``'s ``message.usage`` (input, cache reads and writes),
  then ``message_delta``'s ``usage.output_tokens`` (running totals)
- Gemini: ``usageMetadata`` (``promptTokenCount``, ``candidatesTokenCount``,
  ``thoughtsTokenCount``), running totals in every chunk
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_EVENT_BYTES = 16 * 1024 * 1024  # one SSE event or JSON body read for its usage


@dataclass
class Tokens:
    input: int = 0
    output: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output


# An event's JSON -> (input, output) it reports, either None where it says nothing new.
Extract = Callable[[dict[str, Any]], tuple[int | None, int | None]]


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _sum(*values: Any) -> int | None:
    counts = [c for c in map(_count, values) if c is not None]
    return sum(counts) if counts else None


def openai_responses(event: dict[str, Any]) -> tuple[int | None, int | None]:
    response = event.get("response") if event.get("type") else event
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None, None
    return _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))


def openai_chat(event: dict[str, Any]) -> tuple[int | None, int | None]:
    usage = event.get("usage")
    if not isinstance(usage, dict):
        return None, None
    return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))


def anthropic(event: dict[str, Any]) -> tuple[int | None, int | None]:
    message = event.get("message")
    usage = message.get("usage") if isinstance(message, dict) else event.get("usage")
    if not isinstance(usage, dict):
        return None, None
    spent_in = _sum(
        usage.get("input_tokens"),
        usage.get("cache_creation_input_tokens"),
        usage.get("cache_read_input_tokens"),
    )
    return spent_in, _count(usage.get("output_tokens"))


def gemini(event: dict[str, Any]) -> tuple[int | None, int | None]:
    usage = event.get("usageMetadata")
    if not isinstance(usage, dict):
        return None, None
    return _count(usage.get("promptTokenCount")), _sum(
        usage.get("candidatesTokenCount"), usage.get("thoughtsTokenCount")
    )


class Meter:
    """Reads one response: SSE when its content type says so, else one JSON body."""

    def __init__(self, extract: Extract, streamed: bool) -> None:
        self._extract = extract
        self._streamed = streamed
        self._buffer = bytearray()
        self._separator: bytes | None = None
        self._overflowed = False
        self.tokens = Tokens()

    def feed(self, chunk: bytes) -> None:
        if self._overflowed:
            return
        before = len(self._buffer)
        self._buffer += chunk
        if self._streamed:
            self._read_events(before)
        if len(self._buffer) > MAX_EVENT_BYTES:
            self._overflowed = True  # a body this big is not a usage report we can read
            self._buffer.clear()

    def finish(self) -> Tokens:
        if self._buffer:
            if self._streamed:
                before = len(self._buffer)
                self._buffer += self._separator or b"\n\n"
                self._read_events(before)
            else:
                self._take(bytes(self._buffer))
            self._buffer.clear()
        return self.tokens

    def _read_events(self, before: int) -> None:
        """The events the chunk completed, read only if one of them names a usage: each byte
        is searched for that once, and for event ends only near the chunk's end. Most
        events are text deltas, so a stream costs little more than copying it."""
        buffer = self._buffer
        if self._separator is None:  # a stream keeps the kind of line end it starts with
            first = buffer.find(b"\n")
            if first < 0:
                return
            self._separator = b"\r\n\r\n" if first and buffer[first - 1] == 13 else b"\n\n"
            before = 0
        separator = self._separator
        # The last event end, searched backwards from the end into what this chunk added
        # (a separator may straddle the chunk's start).
        last = buffer.rfind(separator, max(before - len(separator) + 1, 0))
        if last < 0:
            return  # the event goes on
        done = last + len(separator)  # the buffer before this holds whole events only
        if buffer.find(b"usage", 0, last) >= 0:
            self._parse_events(done, separator)
        del buffer[:done]

    def _parse_events(self, done: int, separator: bytes) -> None:
        buffer, start = self._buffer, 0
        while start < done:
            end = buffer.find(separator, start, done)
            end = done - len(separator) if end < 0 else end
            found_usage = buffer.find(b"usage", start, end) >= 0
            event_start, start = start, end + len(separator)
            if not found_usage:  # most events are text deltas: not parsed at all
                continue
            event = bytes(buffer[event_start:end])
            data = b"\n".join(
                line[5:].lstrip(b" ")
                for line in event.replace(b"\r\n", b"\n").split(b"\n")
                if line.startswith(b"data:")
            )
            if data and data != b"[DONE]":
                self._take(data)

    def _take(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):
            return
        if not isinstance(event, dict):
            return
        spent_in, spent_out = self._extract(event)
        # Providers report running totals within one response: the latest wins.
        if spent_in is not None:
            self.tokens.input = spent_in
        if spent_out is not None:
            self.tokens.output = spent_out
