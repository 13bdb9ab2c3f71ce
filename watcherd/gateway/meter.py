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

import ctypes
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


# Every usage a provider reports is under a JSON key that starts so: "usage" (OpenAI,
# Anthropic), "usageMetadata" (Gemini). Events without it are not parsed.
USAGE_KEY = b'"usage'
_EDGE = len(USAGE_KEY) - 1  # bytes kept of a piece for what straddles it and the next
_SMALL = 1024  # pieces shorter than this are gathered in one bytearray, not listed


def _libc_memmem() -> Any:
    """The C library's ``memmem``, or None. It searches a stream's bytes for the usage key
    2-3 times as fast as ``bytes.find``, which, for a needle of a few bytes, steps through
    the bytes a few at a time (with 16 KiB events: 0.45 ms a MiB against 0.2)."""
    try:
        memmem = ctypes.CDLL(None).memmem
    except (OSError, AttributeError):
        return None
    memmem.restype = ctypes.c_void_p
    memmem.argtypes = (ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t)
    return memmem


_memmem = _libc_memmem()
_MEMMEM_FROM = 8 * 1024  # below this, calling it costs more than it saves


def names_usage(data: bytes, start: int = 0, end: int | None = None) -> bool:
    """Whether ``data[start:end]`` holds USAGE_KEY."""
    end = len(data) if end is None else end
    if start or end < _MEMMEM_FROM or _memmem is None or type(data) is not bytes:
        return data.find(USAGE_KEY, start, end) >= 0
    # The bytes' own buffer (no copy), its first ``end`` bytes: never past its end.
    return _memmem(data, min(end, len(data)), USAGE_KEY, len(USAGE_KEY)) is not None


class Meter:
    """Reads one response: SSE when its content type says so, else one JSON body.

    A stream is read in the pieces it arrives in, without copying them: each byte is
    searched once for a usage key, the last event end is looked for backwards from a
    piece's end, and only events that name a usage are put together and parsed. Most
    events are text deltas, so a stream costs about one search of its bytes."""

    def __init__(self, extract: Extract, streamed: bool) -> None:
        self._extract = extract
        self._streamed = streamed
        self._buffer = bytearray()  # a JSON body; a stream's start, until its line end is known
        self._separator: bytes | None = None
        self._pending: list[bytes | bytearray | memoryview] = []  # the event under way
        self._pending_size = 0
        self._pending_usage = False  # whether it names a usage so far
        self._edge = b""  # its last bytes: a key or an event end may straddle two pieces
        self._overflowed = False
        self.tokens = Tokens()

    def feed(self, chunk: bytes) -> None:
        if self._overflowed or not chunk:
            return
        if self._streamed and self._separator is not None:
            self._read(chunk)
        else:
            self._buffer += chunk
            first = self._buffer.find(b"\n") if self._streamed else -1
            if first >= 0:  # a stream keeps the kind of line end it starts with
                crlf = first > 0 and self._buffer[first - 1] == 13
                self._separator = b"\r\n\r\n" if crlf else b"\n\n"
                start = bytes(self._buffer)
                self._buffer.clear()
                self._read(start)
        if len(self._buffer) + self._pending_size > MAX_EVENT_BYTES:
            self._overflowed = True  # a body this big is not a usage report we can read
            self._buffer.clear()
            self._pending.clear()
            self._pending_size = 0

    def finish(self) -> Tokens:
        if self._streamed:
            if self._buffer or self._pending:  # the last event, left unended
                self.feed(self._separator or b"\n\n")
        elif self._buffer:
            self._take(bytes(self._buffer))
        self._buffer.clear()
        self._pending.clear()
        self._pending_size = 0
        return self.tokens

    def _read(self, chunk: bytes) -> None:
        """The events ``chunk`` ends, parsed if one of them names a usage; the rest of it is
        kept, by reference, as the start of the next event."""
        separator = self._separator
        assert separator is not None
        edge = self._edge + chunk[:_EDGE] if self._pending else b""
        last = chunk.rfind(separator)
        if last >= 0:
            end = last + len(separator)  # the chunk up to here ends whole events
        else:  # an event end may straddle the previous piece and this one
            at = edge.rfind(separator)
            end = at + len(separator) - len(self._edge) if at >= 0 else -1
        if end < 0:  # the event goes on
            if not self._pending_usage:
                self._pending_usage = USAGE_KEY in edge or names_usage(chunk)
            self._keep(chunk, 0)
            return
        if self._pending_usage or USAGE_KEY in edge or names_usage(chunk, 0, end):
            self._parse_events(b"".join([*self._pending, memoryview(chunk)[:end]]), separator)
        if self._pending:
            self._pending.clear()
            self._pending_size = 0
            self._edge = b""
        self._pending_usage = end < len(chunk) and names_usage(chunk, end)
        if end < len(chunk):
            self._keep(chunk, end)

    def _keep(self, chunk: bytes, start: int) -> None:
        """``chunk[start:]`` onto the event under way: big pieces by reference, small ones
        gathered (so that an event in many tiny pieces is not a list of as many)."""
        size = len(chunk) - start
        if size <= 0:
            return
        piece = memoryview(chunk)[start:] if start else chunk
        pending = self._pending
        if size >= _SMALL:
            pending.append(piece)
        elif pending and isinstance(pending[-1], bytearray):
            pending[-1] += piece
        else:
            pending.append(bytearray(piece))
        self._pending_size += size
        self._edge = (self._edge + chunk[max(start, len(chunk) - _EDGE) :])[-_EDGE:]

    def _parse_events(self, events: bytes, separator: bytes) -> None:
        """Those of ``events`` (whole events, each ended) that name a usage."""
        start, done = 0, len(events)
        while start < done:
            end = events.find(separator, start, done)
            end = done - len(separator) if end < 0 else end
            found_usage = events.find(USAGE_KEY, start, end) >= 0
            event_start, start = start, end + len(separator)
            if not found_usage:  # most events are text deltas: not parsed at all
                continue
            event = events[event_start:end]
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
