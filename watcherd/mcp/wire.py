"""What the SDK's stdio transport drops unanswered, answered: a line that is not JSON gets
a JSON-RPC "Parse error" (-32700), one that is JSON but no JSON-RPC message an "Invalid
Request" (-32600), both with id null as JSON-RPC 2.0 says (the id of what could not be read
is not known). A host that sent a broken request then hears why instead of waiting."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import anyio
import pydantic
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage
from mcp.types import ErrorData, JSONRPCError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
MAX_DETAIL = 200


def refusal(problem: Exception) -> SessionMessage:
    """The error answer to a line the transport could not read as a message."""
    errors = problem.errors() if isinstance(problem, pydantic.ValidationError) else []
    if any(error.get("type") == "json_invalid" for error in errors):
        code, message = PARSE_ERROR, "Parse error: the line is not JSON"
    else:
        code, message = INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message"
    where = "; ".join(
        f"{'.'.join(map(str, error.get('loc', ()))) or 'message'}: {error.get('msg', '')}"
        for error in errors[:3]
    )  # fmt: skip
    error = ErrorData(code=code, message=message, data=where[:MAX_DETAIL] or None)
    return SessionMessage(JSONRPCError(jsonrpc="2.0", id=None, error=error))


class Answering:
    """A read stream that passes on the messages and answers each unreadable line itself."""

    def __init__(
        self, inner: ReadStream[SessionMessage | Exception], answers: WriteStream[SessionMessage]
    ) -> None:
        self._inner = inner
        self._answers = answers

    async def receive(self) -> SessionMessage | Exception:
        while True:
            item = await self._inner.receive()
            if not isinstance(item, Exception):
                return item
            await self._answers.send(refusal(item))

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Answering:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Answering:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:  # fmt: skip
        await self.aclose()
        return None

    def __getattr__(self, name: str) -> Any:  # last_context, for the SDK's handlers
        return getattr(self._inner, name)
