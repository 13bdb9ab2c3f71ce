"""Lines that are no MCP message, sent raw to `watcherd mcp`: each is answered with a
JSON-RPC error (the SDK alone drops them unanswered), and the server goes on serving."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import cli_environ

ANSWER_SECONDS = 20.0


class RawClient:
    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "watcherd", "--root", str(root), "mcp"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=cli_environ(),
        )  # fmt: skip
        self._pending = b""

    def send(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        """The next line the server writes, within ANSWER_SECONDS."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + ANSWER_SECONDS
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            assert left > 0, "no answer"
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = self.proc.stdout.read1(65536)  # type: ignore[attr-defined]
                assert chunk, "the server closed its output"
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=20)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[RawClient]:
    raw = RawClient(tmp_path / "work")
    raw.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}}).encode())  # fmt: skip
    assert raw.answer()["id"] == 1
    raw.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
    yield raw
    raw.close()


BROKEN = [
    (b"this is not json", -32700, "not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, -32700, "not JSON"),  # nested past the parser's depth
    (b"[1, 2]", -32600, "Invalid Request"),  # a batch: MCP has none
    (b'{"id": 2, "method": "tools/list"}', -32600, "jsonrpc"),
    (b'{"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": [1]}', -32600, "params"),
]


@pytest.mark.parametrize(
    ("line", "code", "said"), BROKEN, ids=["text", "deep", "batch", "no-jsonrpc", "params"]
)
def test_a_line_that_is_no_message_is_answered_and_the_server_goes_on(
    client: RawClient, line: bytes, code: int, said: str
) -> None:
    client.send(line)
    answer = client.answer()
    assert answer["jsonrpc"] == "2.0" and answer["id"] is None
    assert answer["error"]["code"] == code
    assert said in answer["error"]["message"] + answer["error"].get("data", "")
    client.send(b'{"jsonrpc": "2.0", "id": 9, "method": "tools/list"}')
    listed = client.answer()
    assert listed["id"] == 9 and any(t["name"] == "submit_job" for t in listed["result"]["tools"])


def test_a_request_the_sdk_reads_is_answered_as_before(client: RawClient) -> None:
    client.send(b'{"jsonrpc": "2.0", "id": 3, "method": "nope"}')
    assert client.answer() == {"jsonrpc": "2.0", "id": 3,
                               "error": {"code": -32601, "message": "Method not found",
                                         "data": "nope"}}  # fmt: skip
