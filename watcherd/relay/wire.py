"""What the daemon and its relays say to each other: one JSON object a line, then, on a
job's connection, the job's own bytes both ways.

A relay opens a *control* connection (``{"hello": NODE}``): the daemon answers with the jobs
it serves (``{"serve": [ID, ...]}``), then tells each job it starts or ends (``{"open": ID}``,
``{"close": ID}``); the relay answers ``{"ready": ID}`` once that job's sockets are there.
Each connection a job makes to one of its sockets becomes a connection of its own
(``{"connect": ID, "socket": NAME}``, then the bytes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

MAX_LINE = 1024
FIRST_LINE_SECONDS = 10.0
STREAM_LIMIT = 256 * 1024  # bytes read at once while relaying
SOCKET_NAMES = ("model.sock", "egress.sock")
# Connections of one job carried at once: its agent needs a few (the gateway serves at most
# 32 calls of a job at once); more would only spend the daemon's descriptors.
MAX_CONNECTIONS = 64
SOCKETS_DIR_MODE = 0o711  # a job's folder is reached by its name, never listed
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class WireError(ValueError):
    pass


def encode(**fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


async def read_message(
    reader: asyncio.StreamReader, timeout: float | None = None
) -> dict[str, Any]:
    """The next message, or WireError for an ended or unreadable one."""
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (ValueError, TimeoutError) as exc:  # ValueError: past the reader's limit
        raise WireError(f"no readable line ({type(exc).__name__})") from exc
    if not line.endswith(b"\n") or len(line) > MAX_LINE:
        raise WireError("the connection ended" if not line else "a line too long")
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise WireError("a line that is not JSON") from exc
    if not isinstance(message, dict):
        raise WireError("a line that is not a JSON object")
    return message


def job_id_of(message: dict[str, Any], key: str) -> str:
    """The job id a message names under ``key``: one safe folder name, or WireError."""
    value = message.get(key)
    if not isinstance(value, str) or not _SAFE_ID.fullmatch(value) or ".." in value:
        raise WireError(f"{key}: not a job id")
    return value


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Bytes both ways until either end stops; then both are closed (a TLS stream cannot
    half-close, and neither HTTP nor a CONNECT tunnel needs it)."""
    pumps = [asyncio.ensure_future(_pump(a[0], b[1])), asyncio.ensure_future(_pump(b[0], a[1]))]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pump in pumps:
            pump.cancel()
        for _, writer in (a, b):
            await close(writer)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while chunk := await reader.read(STREAM_LIMIT):
            writer.write(chunk)
            await writer.drain()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2.0)
