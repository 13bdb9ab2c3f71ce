"""The model gateway as an attacker inside a job would meet it: through its unix socket,
with its token, against a scripted provider on 127.0.0.1 that records what it receives."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.upstream import FakeProvider
from watcherd.gateway import server
from watcherd.gateway.grants import Grant, Upstream, new_token
from watcherd.gateway.server import Gateway

KEY = "sk-operator-CANARY-0001"
RESPONSES_STREAM = [
    {"type": "response.created", "response": {"id": "r1"}},
    {"type": "response.output_text.delta", "delta": "hi"},
    {"type": "response.completed",
     "response": {"id": "r1", "usage": {"input_tokens": 120, "output_tokens": 30}}},
]  # fmt: skip


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    started = FakeProvider(events=list(RESPONSES_STREAM)).start()
    yield started
    started.stop()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    started = Gateway(max_body=1024 * 1024)
    started.start()
    yield started
    started.stop()


def make_grant(tmp: Path, provider: FakeProvider, job: str = "job-1", **kw: Any) -> Grant:
    folder = tmp / job
    folder.mkdir()
    upstream = Upstream("openai-responses", provider.base_url + "/v1", KEY)
    return Grant(job, new_token(), {"m0": upstream}, audit_path=tmp / f"{job}.jsonl", **kw)


def stream_request(grant: Grant, more_headers: str = "") -> bytes:
    """A streamed Responses call with the job's token, as its agent sends one."""
    data = b'{"stream": true}'
    return (
        f"POST /m0/responses HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {grant.token}"
        f"\r\nContent-Length: {len(data)}\r\n{more_headers}\r\n"
    ).encode() + data


def raw(sock_path: Path, request: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are on the job's socket; the whole answer (until close)."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(timeout)
        conn.connect(str(sock_path))
        conn.sendall(request)
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" not in request:
                head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                length = _content_length(head)
                if length is not None and len(rest) >= length:
                    break
        return b"".join(chunks)


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


def post(sock: Path, path: str, body: Any, headers: dict[str, str]) -> tuple[int, bytes]:
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:48080\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    answer = raw(sock, head.encode() + data)
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def audit(grant: Grant) -> list[dict[str, Any]]:
    return [json.loads(line) for line in grant.audit_path.read_text().splitlines()]


def test_a_call_goes_upstream_with_the_key_in_place_of_the_token_and_is_counted(
    tmp_path: Path, provider: FakeProvider, gateway: Gateway
) -> None:
    grant = make_grant(tmp_path, provider)
    sock = gateway.open(grant, tmp_path / "job-1")
    status, body = post(sock, "/m0/responses", {"model": "m", "stream": True}, {
        "Authorization": f"Bearer {grant.token}", "x-api-key": "planted", "Cookie": "c=1",
        "OpenAI-Organization": "org-elsewhere"})  # fmt: skip
    assert status == 200 and b"response.completed" in body
    seen = provider.seen[-1]
    assert seen.path_qs == "/v1/responses"
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert grant.token not in json.dumps(seen.headers)
    assert not {"x-api-key", "Cookie", "OpenAI-Organization"} & set(seen.headers)
    assert (grant.used.input, grant.used.output, grant.calls) == (120, 30, 1)
    (line,) = audit(grant)
    assert line["status"] == 200 and line["path"] == "m0/responses"
    assert (line["input_tokens"], line["output_tokens"]) == (120, 30)
    assert (
        KEY not in grant.audit_path.read_text() and grant.token not in grant.audit_path.read_text()
    )


def test_headers_the_operators_setup_fixes_replace_the_jobs(
    tmp_path: Path, provider: FakeProvider, gateway: Gateway
) -> None:
    """A ChatGPT login's account is the login's: a job cannot point the login's token at
    another account it may serve, in any spelling of the header."""
    account = {"ChatGPT-Account-ID": "acct-login"}
    upstream = Upstream("openai-responses", provider.base_url + "/v1", KEY, account)
    grant = Grant("job-1", new_token(), {"m0": upstream}, audit_path=tmp_path / "job-1.jsonl")
    (tmp_path / "job-1").mkdir()
    sock = gateway.open(grant, tmp_path / "job-1")
    status, _ = post(sock, "/m0/responses", {"model": "m"}, {
        "Authorization": f"Bearer {grant.token}", "chatgpt-account-id": "acct-other"})  # fmt: skip
    assert status == 200
    sent = {k.lower(): v for k, v in provider.seen[-1].headers.items()}
    assert sent["chatgpt-account-id"] == "acct-login"
    assert "acct-other" not in json.dumps(provider.seen[-1].headers)


def test_a_stream_is_passed_on_as_it_comes(
    tmp_path: Path, provider: FakeProvider, gateway: Gateway
) -> None:
    provider.hold = threading.Event()
    grant = make_grant(tmp_path, provider)
    sock = gateway.open(grant, tmp_path / "job-1")
    request = stream_request(grant)
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(str(sock))
        conn.sendall(request)
        received = b""
        while b"response.created" not in received:  # the first event, while upstream holds
            received += conn.recv(65536)
        assert b"response.completed" not in received
        provider.hold.set()
        while b"response.completed" not in received:
            received += conn.recv(65536)


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        ("POST /m0/files", 403),  # not a call the agent needs
        ("GET /m0/responses", 403),
        ("POST /m1/responses", 404),  # no such upstream
        ("POST /m0/../v1/responses", 400),
        ("POST /m0/%2e%2e/responses", 400),
        ("POST /m0//responses", 400),
        ("POST http://evil.test/m0/responses", 400),  # absolute-form target
    ],
)
def test_other_paths_and_tricks_are_refused(
    tmp_path: Path, provider: FakeProvider, gateway: Gateway, request_line: str, status: int
) -> None:
    grant = make_grant(tmp_path, provider)
    sock = gateway.open(grant, tmp_path / "job-1")
    answer = raw(sock, (f"{request_line} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                        f"Authorization: Bearer {grant.token}\r\nContent-Length: 2\r\n\r\n{{}}"
                        ).encode())  # fmt: skip
    assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer[:200]
    assert not provider.seen


def test_a_host_pointing_elsewhere_is_refused(
    tmp_path: Path, provider: FakeProvider, gateway: Gateway
) -> None:
    grant = make_grant(tmp_path, provider)
    sock = gateway.open(grant, tmp_path / "job-1")
    status, _ = post(
        sock, "/m0/responses", {}, {"Host": "evil.test", "Authorization": f"Bearer {grant.token}"}
    )
    assert status == 400 and not provider.seen


def test_smuggling_oversized_headers_and_bodies_are_refused(
    tmp_path: Path, provider: FakeProvider, gateway: Gateway
) -> None:
    grant = make_grant(tmp_path, provider)
    sock = gateway.open(grant, tmp_path / "job-1")
    auth = f"Authorization: Bearer {grant.token}\r\n"
    smuggle = (
        f"POST /m0/responses HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST /m0/files HTTP/1.1\r\n\r\n"
    )
    assert raw(sock, smuggle.encode()).split(b" ")[1] == b"400"
    huge = f"POST /m0/responses HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}X-Big: {'a' * 20000}\r\n\r\n"
    assert raw(sock, huge.encode()).split(b" ")[1] in (b"400", b"431")
    status, _ = post(sock, "/m0/responses", {"x": "y" * (2 * 1024 * 1024)},
                     {"Authorization": f"Bearer {grant.token}"})  # fmt: skip
    assert status == 413
    assert not provider.seen


@pytest.mark.parametrize(
    "body",
    [
        {"tools": [{"type": "web_search_preview"}]},
        {"tools": [{"type": "mcp", "server_url": "https://evil.test/mcp"}]},
        {"mcp_servers": [{"type": "url", "url": "https://evil.test"}]},
        {"tools": [{"urlContext": {}}]},
        {"input": [{"type": "input_image", "image_url": "https://evil.test/x.png"}]},
    ],
)
def test_a_provider_side_network_tool_is_refused(
    tmp_path: Path, provider: FakeProvider, gateway: Gateway, body: dict[str, Any]
) -> None:
    grant = make_grant(tmp_path, provider)
    sock = gateway.open(grant, tmp_path / "job-1")
    status, answer = post(sock, "/m0/responses", body, {"Authorization": f"Bearer {grant.token}"})
    assert status == 403 and b"reach the network" in answer
    assert not provider.seen
    assert audit(grant)[0]["refused"]


def test_a_network_tool_passes_where_the_operator_allows_it(
    tmp_path: Path, provider: FakeProvider, gateway: Gateway
) -> None:
    grant = make_grant(tmp_path, provider, allow_network_tools=True)
    sock = gateway.open(grant, tmp_path / "job-1")
    body = {"tools": [{"type": "web_search_preview"}]}
    status, _ = post(sock, "/m0/responses", body, {"Authorization": f"Bearer {grant.token}"})
    assert status == 200 and provider.seen


def test_a_token_is_good_only_on_its_own_socket_and_only_while_its_job_runs(
    tmp_path: Path, provider: FakeProvider, gateway: Gateway
) -> None:
    first, second = make_grant(tmp_path, provider, "job-1"), make_grant(tmp_path, provider, "job-2")
    first_sock = gateway.open(first, tmp_path / "job-1")
    second_sock = gateway.open(second, tmp_path / "job-2")
    status, _ = post(second_sock, "/m0/responses", {}, {"Authorization": f"Bearer {first.token}"})
    assert status == 401
    assert post(first_sock, "/m0/responses", {}, {"Authorization": "Bearer " + KEY})[0] == 401
    assert not provider.seen
    spent = gateway.close("job-1")
    assert spent is not None and spent.refused == 1
    assert not first_sock.exists()
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        post(first_sock, "/m0/responses", {}, {"Authorization": f"Bearer {first.token}"})


def test_over_its_budget_a_job_gets_no_more_calls(
    tmp_path: Path, provider: FakeProvider, gateway: Gateway
) -> None:
    grant = make_grant(tmp_path, provider, token_budget=200)
    sock = gateway.open(grant, tmp_path / "job-1")
    auth = {"Authorization": f"Bearer {grant.token}"}
    assert post(sock, "/m0/responses", {}, auth)[0] == 200  # 150 tokens
    assert not grant.over_budget
    assert post(sock, "/m0/responses", {}, auth)[0] == 200  # 300: over
    assert grant.over_budget
    status, answer = post(sock, "/m0/responses", {}, auth)
    assert status == 429 and b"token budget exceeded" in answer
    assert len(provider.seen) == 2


def test_a_slow_client_is_cut_off_and_hurts_no_other_job(
    tmp_path: Path, provider: FakeProvider
) -> None:
    gateway = Gateway(body_timeout=0.5)
    try:
        slow, fast = (
            make_grant(tmp_path, provider, "job-1"),
            make_grant(tmp_path, provider, "job-2"),
        )
        slow_sock = gateway.open(slow, tmp_path / "job-1")
        fast_sock = gateway.open(fast, tmp_path / "job-2")
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(10)
            conn.connect(str(slow_sock))
            head = (
                f"POST /m0/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                f"Bearer {slow.token}\r\nContent-Length: 100\r\n\r\n{{"
            )
            conn.sendall(head.encode())
            status, _ = post(
                fast_sock, "/m0/responses", {}, {"Authorization": f"Bearer {fast.token}"}
            )
            assert status == 200  # the other job is served meanwhile
            assert conn.recv(65536).split(b" ")[1] == b"408"
        assert len(provider.seen) == 1
    finally:
        gateway.stop()


def test_a_socket_deep_in_a_long_root_works(
    tmp_path: Path, provider: FakeProvider, gateway: Gateway
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "20261207T000000Z-a-long-job-name-aaaaaa"
    deep.mkdir(parents=True)
    grant = make_grant(tmp_path, provider)
    sock = gateway.open(grant, deep)
    assert len(str(sock)) > 108 and sock.is_socket()
    folder = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    try:  # the client too needs a short name for it (a container has /run/watcherd/...)
        short = Path(f"/proc/self/fd/{folder}/{sock.name}")
        auth = {"Authorization": f"Bearer {grant.token}"}
        assert post(short, "/m0/responses", {}, auth)[0] == 200
    finally:
        os.close(folder)


def test_a_big_stream_crosses_whole_and_is_counted(tmp_path: Path) -> None:
    """Some MiB in big events, as the benchmark streams them: the bytes the job gets are the
    provider's, and the usage at the end is counted."""
    deltas = [{"type": "response.output_text.delta", "delta": f"{n:05d}" + "x" * 20_000}
              for n in range(200)]  # fmt: skip
    provider = FakeProvider(events=[*deltas, RESPONSES_STREAM[-1]]).start()
    gateway = Gateway()
    try:
        grant = make_grant(tmp_path, provider)
        sock = gateway.open(grant, tmp_path / "job-1")
        status, body = post(sock, "/m0/responses", {}, {"Authorization": f"Bearer {grant.token}"})
        assert status == 200
        events, rest = [], body
        while (size := int(rest.split(b"\r\n", 1)[0], 16)) > 0:  # de-chunked
            events.append(rest.split(b"\r\n", 1)[1][:size])
            rest = rest.split(b"\r\n", 1)[1][size + 2 :]
        sent = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in provider.events)
        assert b"".join(events) == sent and len(sent) > 4_000_000
        assert (grant.used.input, grant.used.output) == (120, 30)
    finally:
        gateway.stop()
        provider.stop()


def test_a_jobs_connection_may_hold_a_big_answer() -> None:
    """The job's socket gets a send buffer of JOB_SEND_BUFFER (within the system's limit)."""
    mine, theirs = socket.socketpair(socket.AF_UNIX)
    with mine, theirs:

        class Transport:
            def get_extra_info(self, name: str) -> Any:
                return mine if name == "socket" else None

        request: Any = type("Request", (), {"transport": Transport()})()
        server._send_buffer(request, server.JOB_SEND_BUFFER)
        limit = int(Path("/proc/sys/net/core/wmem_max").read_text())
        got = mine.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert got == 2 * min(server.JOB_SEND_BUFFER, limit)  # the kernel doubles it


def test_a_job_gets_only_so_many_calls_at_once(tmp_path: Path, provider: FakeProvider) -> None:
    """Each call under way holds the daemon's memory: past the cap a call is refused (and
    audited), the calls under way go on, and a call is taken again once one has ended."""
    gateway = Gateway(max_calls=3)
    gateway.start()
    provider.hold = threading.Event()
    grant = make_grant(tmp_path, provider)
    sock = gateway.open(grant, tmp_path / "job-1")
    request = stream_request(grant, "Connection: close\r\n")
    held = []
    try:
        for _ in range(3):
            conn = socket.socket(socket.AF_UNIX)
            conn.settimeout(10)
            conn.connect(str(sock))
            conn.sendall(request)
            received = b""
            while b"response.created" not in received:  # under way, upstream holding it
                received += conn.recv(65536)
            held.append(conn)
        refused = raw(sock, request)
        assert refused.startswith(b"HTTP/1.1 429") and b"more than 3 calls at once" in refused
        provider.hold.set()
        for conn in held:
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
            assert b"response.completed" in received
        assert raw(sock, request).startswith(b"HTTP/1.1 200")
    finally:
        for conn in held:
            conn.close()
        gateway.stop()
    refusals = [r for r in audit(grant) if r.get("status") == 429]
    assert len(refusals) == 1 and grant.refused == 1
