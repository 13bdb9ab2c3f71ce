"""The egress CONNECT proxy, driven through a real unix socket.

Nothing here leaves the machine: every name is answered by the test's own resolver or the
policy's ``hosts``, and the only listeners are the test's own, on 127.0.0.1. Addresses that
are not loopback appear only as answers the proxy must refuse before it dials anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from watcherd.gateway.egress import (
    Allowlist,
    EgressPolicy,
    EgressProxy,
    parse_allowlists,
)

T = TypeVar("T")
DEADLINE = 2.0  # any single wait in these tests; the proxy answers in milliseconds
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def run(scenario: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario, 4 * DEADLINE)

    return asyncio.run(bounded())


@pytest.fixture
def sock() -> Iterator[Path]:
    """A short socket path (a unix socket path must fit in 108 bytes; pytest's tmp_path may
    not)."""
    with tempfile.TemporaryDirectory(prefix="egress-") as folder:
        yield Path(folder) / "proxy.sock"


class Audits:
    """The audit callback: keeps the records, and lets a test wait for the n-th."""

    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []
        self._added = asyncio.Event()

    def __call__(self, record: dict[str, object]) -> None:
        self.records.append(record)
        self._added.set()

    async def wait(self, count: int = 1) -> list[dict[str, object]]:
        async with asyncio.timeout(DEADLINE):
            while len(self.records) < count:
                self._added.clear()
                await self._added.wait()
        return self.records


class Resolver:
    """The test's DNS: fixed answers, and a record of every question."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


class LoopbackProxy(EgressProxy):
    """The real proxy, except that 127.0.0.1 itself counts as reachable.

    A tunnel that succeeds must end at a listener, and the only listeners these tests may own
    are on 127.0.0.1, which the real check rightly refuses. So tests that need a working
    tunnel let that one address through here; every other address still meets the real check,
    and the refusal of loopback is tested with the real proxy."""

    def _refusal(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        if address == ipaddress.IPv4Address("127.0.0.1"):
            return None
        return super()._refusal(address)


class Upstream:
    """A TCP listener on 127.0.0.1 that the test owns, running ``handler`` per connection;
    it stops, and cuts what it accepted, when the test's ``async with`` ends."""

    def __init__(self, handler: Callable[[Streams], Awaitable[None]]) -> None:
        self.handler = handler
        self.accepted = 0
        self.ended = asyncio.Event()  # a connection's handler has returned
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port: int = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        try:
            await self.handler((reader, writer))
        except ConnectionError:
            pass
        finally:
            writer.close()
            self.ended.set()


async def reply_after_eof(streams: Streams) -> None:
    """Read until the client half-closes, then answer and close."""
    reader, writer = streams
    data = await reader.read(-1)
    writer.write(b"pong:" + data)
    await writer.drain()


async def greet_and_hold(streams: Streams) -> None:
    """Say hello, then keep the connection open until the other side ends it."""
    reader, writer = streams
    writer.write(b"hello")
    await writer.drain()
    await reader.read(-1)


@contextlib.asynccontextmanager
async def serving(proxy: EgressProxy, path: Path) -> AsyncIterator[Path]:
    await proxy.start(path)
    try:
        yield path
    finally:
        await asyncio.wait_for(proxy.close(), DEADLINE)


async def ask(path: Path, head: bytes) -> tuple[str, dict[str, str], str]:
    """Send one request head; (status line, headers, body) of the answer, read until the
    proxy closes."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(head)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(-1), DEADLINE)
    finally:
        writer.close()
    top, _, body = response.decode().partition("\r\n\r\n")
    status, *lines = top.split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


def connect(target: str) -> bytes:
    return f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()


async def open_tunnel(path: Path, target: str, first: bytes = b"") -> Streams:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(connect(target) + first)
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    assert answer == b"HTTP/1.1 200 Connection established\r\n\r\n"
    return reader, writer


async def ended(reader: asyncio.StreamReader) -> bool:
    """Whether the other side ends this stream within the deadline."""
    try:
        return await asyncio.wait_for(reader.read(-1), DEADLINE) is not None
    except ConnectionError:
        return True


def policy(*lists: Allowlist, hosts: dict[str, tuple[str, ...]] | None = None) -> EgressPolicy:
    return EgressPolicy(allowlists=lists, hosts=hosts or {})


def test_an_allowed_name_tunnels_bytes_both_ways(sock: Path) -> None:
    async def scenario() -> None:
        audits, resolver = Audits(), Resolver()
        async with Upstream(reply_after_eof) as upstream:
            rules = policy(
                Allowlist("test", ("api.example.test",), (upstream.port,)),
                hosts={"api.example.test": ("127.0.0.1",)},
            )
            async with serving(LoopbackProxy(rules, audits, resolver), sock):
                reader, writer = await open_tunnel(sock, f"api.example.test:{upstream.port}")
                writer.write(b"ping")
                writer.write_eof()  # the half-close travels up; the answer still comes down
                assert await asyncio.wait_for(reader.read(-1), DEADLINE) == b"pong:ping"
                writer.close()
                (record,) = await audits.wait()
        assert resolver.asked == []  # the policy's hosts answered
        assert record["decision"] == "allow"
        assert record["kind"] == "egress"
        assert record["target"] == f"api.example.test:{upstream.port}"
        assert record["address"] == "127.0.0.1"
        assert (record["bytes_up"], record["bytes_down"]) == (4, 9)
        assert record["reason"] is None
        assert isinstance(record["duration_ms"], int) and record["duration_ms"] >= 0
        assert datetime.fromisoformat(str(record["time"])).tzinfo is not None

    run(scenario())


def test_bytes_sent_with_the_head_reach_the_target_and_the_resolver_answers(sock: Path) -> None:
    async def scenario() -> None:
        audits = Audits()
        async with Upstream(reply_after_eof) as upstream:
            resolver = Resolver({"api.example.test": ["127.0.0.1"]})
            rules = policy(Allowlist("test", ("*.example.test",), (upstream.port,)))
            async with serving(LoopbackProxy(rules, audits, resolver), sock):
                target = f"API.Example.Test.:{upstream.port}"  # case and root dot normalised
                reader, writer = await open_tunnel(sock, target, first=b"early")
                writer.write_eof()
                assert await asyncio.wait_for(reader.read(-1), DEADLINE) == b"pong:early"
                writer.close()
                (record,) = await audits.wait()
        assert resolver.asked == [("api.example.test", upstream.port)]
        assert record["bytes_up"] == 5

    run(scenario())


def test_a_name_on_no_allowlist_is_refused_without_resolving_it(sock: Path) -> None:
    async def scenario() -> None:
        audits, resolver = Audits(), Resolver({"evil.example.test": ["127.0.0.1"]})
        rules = policy(Allowlist("pypi", ("pypi.test",)), Allowlist("gh", ("github.test",)))
        async with serving(EgressProxy(rules, audits, resolver), sock):
            status, _, body = await ask(sock, connect("evil.example.test:443"))
            (record,) = await audits.wait()
        assert status == "HTTP/1.1 403 Forbidden"
        assert body == "evil.example.test is on none of this job's allowlists (pypi, gh)\n"
        assert resolver.asked == []
        assert record["decision"] == "deny"
        assert record["target"] == "evil.example.test:443"
        assert record["address"] is None
        assert record["reason"] == body.strip()

    run(scenario())


def test_a_port_the_list_does_not_name_is_refused(sock: Path) -> None:
    async def scenario() -> None:
        audits, resolver = Audits(), Resolver({"pypi.test": ["127.0.0.1"]})
        rules = policy(Allowlist("pypi", ("pypi.test",), (443, 8443)))
        async with serving(EgressProxy(rules, audits, resolver), sock):
            status, _, body = await ask(sock, connect("pypi.test:80"))
            (record,) = await audits.wait()
        assert status == "HTTP/1.1 403 Forbidden"
        assert body == "port 80 is not allowed for pypi.test (allowed: 443, 8443)\n"
        assert resolver.asked == []
        assert record["decision"] == "deny"

    run(scenario())


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.1.",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "::1",
        "2130706433",
        "0x7f000001",
        "0x7f.1",
        "0X7F.0.0.1",
        "127.1",
        "0177.0.0.1",
        "1.2.3.4",
        "example.123",
    ],
)
def test_ip_literal_targets_are_refused(sock: Path, host: str) -> None:
    async def scenario() -> None:
        audits, resolver = Audits(), Resolver()
        rules = policy(Allowlist("any", ("*.example.test",)))
        async with serving(EgressProxy(rules, audits, resolver), sock):
            status, _, body = await ask(sock, connect(f"{host}:443"))
            (record,) = await audits.wait()
        assert status == "HTTP/1.1 403 Forbidden"
        assert "is an IP address; only names are allowed" in body
        assert resolver.asked == []
        assert record["decision"] == "deny"

    run(scenario())


@pytest.mark.parametrize(
    "host",
    ["under_score.example.test", "a\x00b.example.test", "\xe9.example.test", "a..example.test"],
)
def test_a_target_that_is_not_a_dns_name_is_refused(sock: Path, host: str) -> None:
    async def scenario() -> None:
        audits, resolver = Audits(), Resolver()
        rules = policy(Allowlist("any", ("*.example.test",)))
        async with serving(EgressProxy(rules, audits, resolver), sock):
            head = f"CONNECT {host}:443 HTTP/1.1\r\n\r\n".encode("latin-1")
            status, _, body = await ask(sock, head)
            (record,) = await audits.wait()
        assert status == "HTTP/1.1 403 Forbidden"
        assert body.endswith(" is not a DNS name\n")
        assert resolver.asked == []
        assert record["decision"] == "deny"

    run(scenario())


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ],
)
def test_an_allowed_name_resolving_to_a_local_address_is_refused(
    sock: Path, address: str, kind: str
) -> None:
    async def scenario() -> None:
        audits, resolver = Audits(), Resolver({"pypi.test": [address]})
        rules = policy(Allowlist("pypi", ("pypi.test",)))
        async with serving(EgressProxy(rules, audits, resolver), sock):
            status, _, body = await ask(sock, connect("pypi.test:443"))
            (record,) = await audits.wait()
        assert status == "HTTP/1.1 403 Forbidden"
        assert body.startswith("pypi.test resolves to ")
        assert body.endswith(f", a {kind} address\n")
        assert record["decision"] == "deny"
        assert record["target"] == "pypi.test:443"
        assert ipaddress.ip_address(str(record["address"])) == ipaddress.ip_address(address)

    run(scenario())


def test_one_bad_address_among_the_answers_refuses_the_name_before_dialling(sock: Path) -> None:
    async def scenario() -> None:
        audits = Audits()
        async with Upstream(reply_after_eof) as upstream:
            rules = policy(
                Allowlist("test", ("*.example.test",), (upstream.port,)),
                hosts={
                    "mixed.example.test": ("127.0.0.1", "10.0.0.1"),
                    "good.example.test": ("127.0.0.1",),
                },
            )
            async with serving(LoopbackProxy(rules, audits, Resolver()), sock):
                status, _, body = await ask(sock, connect(f"mixed.example.test:{upstream.port}"))
                # A tunnel that works, after: had the refused one dialled, it came first.
                reader, writer = await open_tunnel(sock, f"good.example.test:{upstream.port}")
                writer.write_eof()
                assert await asyncio.wait_for(reader.read(-1), DEADLINE) == b"pong:"
                writer.close()
                await audits.wait(2)
        assert status == "HTTP/1.1 403 Forbidden"
        assert "10.0.0.1, a private address" in body
        assert upstream.accepted == 1

    run(scenario())


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this-network (0/8)"),
        ("10.255.0.1", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("127.255.0.9", "loopback"),
        ("169.254.1.1", "link-local"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.0.0.9", "IETF protocol assignment"),
        ("192.0.2.1", "documentation"),
        ("192.168.1.1", "private"),
        ("198.18.0.1", "benchmarking"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("::", "unspecified"),
        ("::127.0.0.1", "IPv4-compatible (deprecated)"),
        ("::ffff:10.0.0.1", "IPv4-mapped private"),
        ("::ffff:169.254.169.254", "IPv4-mapped link-local (cloud metadata)"),
        ("64:ff9b::7f00:1", "NAT64 of loopback"),
        ("64:ff9b::a9fe:a9fe", "NAT64 of link-local (cloud metadata)"),
        ("64:ff9b:1::1", "NAT64 (local use)"),
        ("2001::1", "Teredo"),
        ("2001:db8::1", "documentation"),
        ("2002:7f00:1::1", "6to4"),
        ("fc00::1", "unique local"),
        ("fd12:3456::1", "unique local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fec0::1", "site-local (deprecated)"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("4000::1", "reserved (outside 2000::/3)"),
    ],
)
def test_the_address_check_names_the_class_it_refuses(address: str, kind: str) -> None:
    proxy = EgressProxy(policy(), lambda record: None)
    assert proxy._refusal(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    "address", ["1.1.1.1", "151.101.0.223", "2606:4700::1111", "::ffff:1.1.1.1", "64:ff9b::101:101"]
)
def test_the_address_check_lets_global_unicast_through(address: str) -> None:
    proxy = EgressProxy(policy(), lambda record: None)
    assert proxy._refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("files.pythonhosted.test", True),
        ("a.b.pythonhosted.test", True),
        ("pythonhosted.test", False),  # the apex, not listed
        ("evilpythonhosted.test", False),
        ("pythonhosted.test.evil.test", False),
        ("pypi.test", True),
        ("www.pypi.test", False),
    ],
)
def test_a_wildcard_matches_labels_below_its_apex_only(host: str, allowed: bool) -> None:
    rules = Allowlist("pypi", ("pypi.test", "*.pythonhosted.test"))
    assert rules.allows_host(host) is allowed


@pytest.mark.parametrize(
    "head",
    [
        b"GET http://pypi.test/ HTTP/1.1\r\nHost: pypi.test\r\n\r\n",
        b"POST http://pypi.test/ HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody",
        b"connect pypi.test:443 HTTP/1.1\r\n\r\n",  # methods are case-sensitive
    ],
)
def test_a_method_other_than_connect_gets_405(sock: Path, head: bytes) -> None:
    async def scenario() -> None:
        audits, resolver = Audits(), Resolver({"pypi.test": ["127.0.0.1"]})
        rules = policy(Allowlist("pypi", ("pypi.test",)))
        async with serving(EgressProxy(rules, audits, resolver), sock):
            status, headers, body = await ask(sock, head)
            (record,) = await audits.wait()
        assert status == "HTTP/1.1 405 Method Not Allowed"
        assert headers["Allow"] == "CONNECT"
        assert body.startswith("only CONNECT is served, not ")
        assert resolver.asked == []
        assert record["decision"] == "deny"

    run(scenario())


def test_a_malformed_request_line_gets_400(sock: Path) -> None:
    async def scenario() -> None:
        audits = Audits()
        async with serving(
            EgressProxy(policy(Allowlist("pypi", ("pypi.test",))), audits, Resolver()), sock
        ):
            status, _, _ = await ask(sock, b"CONNECT pypi.test:443\r\n\r\n")
            missing_port, _, _ = await ask(sock, connect("pypi.test"))
            await audits.wait(2)
        assert status == missing_port == "HTTP/1.1 400 Bad Request"

    run(scenario())


@pytest.mark.parametrize("size", [8192, 8193, 9000, 64 * 1024])
def test_an_oversized_head_gets_431(sock: Path, size: int) -> None:
    async def scenario() -> None:
        audits = Audits()
        line = b"CONNECT other.test:443 HTTP/1.1\r\n"
        padding = b"X-Pad: " + b"a" * (size - len(line) - 7 - 4) + b"\r\n\r\n"
        head = line + padding
        assert len(head) == size
        async with serving(
            EgressProxy(policy(Allowlist("pypi", ("pypi.test",))), audits, Resolver()), sock
        ):
            status, _, body = await ask(sock, head)
            (record,) = await audits.wait()
        if size <= 8192:  # the bound itself: a head this big is read, then judged
            assert status == "HTTP/1.1 403 Forbidden"
        else:
            assert status == "HTTP/1.1 431 Request Header Fields Too Large"
            assert body == "request head over 8192 bytes\n"
            assert record["decision"] == "deny"

    run(scenario())


def test_a_slow_head_is_dropped(sock: Path) -> None:
    async def scenario() -> None:
        audits = Audits()
        rules = policy(Allowlist("pypi", ("pypi.test",)))
        async with serving(EgressProxy(rules, audits, Resolver(), head_timeout=0.2), sock):
            reader, writer = await asyncio.open_unix_connection(str(sock))
            began = time.monotonic()
            writer.write(b"CONNECT pypi.test:443 HTTP/1.1\r\nHost: pypi.test\r\n")  # no end
            assert await asyncio.wait_for(reader.read(-1), DEADLINE) == b""  # dropped, unanswered
            waited = time.monotonic() - began
            writer.close()
            (record,) = await audits.wait()
        assert waited >= 0.2
        assert record["decision"] == "deny"
        assert record["reason"] == "no full request head within 0.2s"

    run(scenario())


def test_close_cuts_an_open_tunnel(sock: Path) -> None:
    async def scenario() -> None:
        audits = Audits()
        async with Upstream(greet_and_hold) as upstream:
            rules = policy(
                Allowlist("test", ("api.example.test",), (upstream.port,)),
                hosts={"api.example.test": ("127.0.0.1",)},
            )
            proxy = LoopbackProxy(rules, audits, Resolver())
            await proxy.start(sock)
            reader, writer = await open_tunnel(sock, f"api.example.test:{upstream.port}")
            assert await asyncio.wait_for(reader.readexactly(5), DEADLINE) == b"hello"
            await asyncio.wait_for(proxy.close(), DEADLINE)
            assert await ended(reader)  # the job's end of the tunnel
            await asyncio.wait_for(upstream.ended.wait(), DEADLINE)  # and the outside's
            writer.close()
        (record,) = audits.records  # written by the time close() returns
        assert record["decision"] == "allow"
        assert record["reason"] == "cut: the proxy closed"
        assert record["bytes_down"] == 5
        assert not sock.exists()
        with pytest.raises(OSError):
            await asyncio.open_unix_connection(str(sock))

    run(scenario())


def test_past_the_tunnel_limit_the_proxy_answers_503(sock: Path) -> None:
    async def scenario() -> None:
        audits = Audits()
        async with Upstream(greet_and_hold) as upstream:
            target = f"api.example.test:{upstream.port}"
            rules = policy(
                Allowlist("test", ("api.example.test",), (upstream.port,)),
                hosts={"api.example.test": ("127.0.0.1",)},
            )
            async with serving(LoopbackProxy(rules, audits, Resolver(), max_tunnels=1), sock):
                reader, writer = await open_tunnel(sock, target)
                assert await asyncio.wait_for(reader.readexactly(5), DEADLINE) == b"hello"
                status, _, body = await ask(sock, connect(target))
                (refused,) = await audits.wait()
                writer.close()  # the first tunnel ends and frees its slot
                await audits.wait(2)
                again, again_writer = await open_tunnel(sock, target)
                assert await asyncio.wait_for(again.readexactly(5), DEADLINE) == b"hello"
                again_writer.close()
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert body == "too many open tunnels (at most 1)\n"
        assert refused["decision"] == "deny"

    run(scenario())


def test_a_failing_audit_does_not_break_the_proxy(
    sock: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(record: dict[str, object]) -> None:
        raise RuntimeError("the audit log is gone")

    async def scenario() -> None:
        async with Upstream(reply_after_eof) as upstream:
            rules = policy(
                Allowlist("test", ("api.example.test",), (upstream.port,)),
                hosts={"api.example.test": ("127.0.0.1",)},
            )
            async with serving(LoopbackProxy(rules, broken, Resolver()), sock):
                status, _, _ = await ask(sock, connect("other.example.test:443"))
                reader, writer = await open_tunnel(sock, f"api.example.test:{upstream.port}")
                writer.write(b"x")
                writer.write_eof()
                assert await asyncio.wait_for(reader.read(-1), DEADLINE) == b"pong:x"
                writer.close()
        assert status == "HTTP/1.1 403 Forbidden"

    run(scenario())
    assert "the audit of other.example.test:443 failed" in caplog.text
    assert "the audit of api.example.test:" in caplog.text


def test_a_name_that_does_not_resolve_gets_502(sock: Path) -> None:
    async def scenario() -> None:
        audits, resolver = Audits(), Resolver()
        rules = policy(Allowlist("pypi", ("pypi.test",)))
        async with serving(EgressProxy(rules, audits, resolver), sock):
            status, _, body = await ask(sock, connect("pypi.test:443"))
            (record,) = await audits.wait()
        assert status == "HTTP/1.1 502 Bad Gateway"
        assert body.startswith("cannot resolve pypi.test: ")
        assert resolver.asked == [("pypi.test", 443)]
        assert record["decision"] == "deny"

    run(scenario())


def test_the_socket_is_open_to_the_container_user(sock: Path) -> None:
    async def scenario() -> int:
        proxy = EgressProxy(policy(), Audits(), Resolver())
        async with serving(proxy, sock):
            return stat.S_IMODE(sock.stat().st_mode)

    assert run(scenario()) == 0o666


def test_parse_allowlists_reads_the_config_shape() -> None:
    lists = parse_allowlists(
        {
            "pypi": {"hosts": ["PyPI.org", "*.pythonhosted.org", "pypi.org"]},
            "git-hub": {"hosts": ["github.com"], "ports": [443, 22, 443]},
        }
    )
    assert lists == {
        "pypi": Allowlist("pypi", ("pypi.org", "*.pythonhosted.org"), (443,)),
        "git-hub": Allowlist("git-hub", ("github.com",), (443, 22)),
    }
    assert parse_allowlists(None) == {}


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (["pypi.org"], "egress: expected a mapping"),
        ({"PyPI": {"hosts": ["pypi.org"]}}, "'PyPI' is not a valid allowlist name"),
        ({"py pi": {"hosts": ["pypi.org"]}}, "'py pi'"),
        ({"pypi": ["pypi.org"]}, "egress.pypi: expected a mapping"),
        ({"pypi": {"hosts": ["pypi.org"], "port": [443]}}, "egress.pypi: unknown key 'port'"),
        ({"pypi": {}}, "egress.pypi.hosts"),
        ({"pypi": {"hosts": []}}, "egress.pypi.hosts"),
        ({"pypi": {"hosts": "pypi.org"}}, "egress.pypi.hosts"),
        ({"pypi": {"hosts": [7]}}, "egress.pypi.hosts"),
        ({"pypi": {"hosts": ["1.2.3.4"]}}, "egress.pypi.hosts: '1.2.3.4' is an IP address"),
        ({"pypi": {"hosts": ["*.10"]}}, "egress.pypi.hosts: '*.10' is an IP address"),
        ({"pypi": {"hosts": ["::1"]}}, "egress.pypi.hosts: '::1' is an IP address"),
        ({"pypi": {"hosts": ["[::1]"]}}, "egress.pypi.hosts: '[::1]' is an IP address"),
        ({"pypi": {"hosts": ["*"]}}, "egress.pypi.hosts: '*' is not a DNS name"),
        ({"pypi": {"hosts": ["pypi.*"]}}, "'pypi.*'"),
        ({"pypi": {"hosts": ["*pypi.org"]}}, "'*pypi.org'"),
        ({"pypi": {"hosts": ["a.*.org"]}}, "'a.*.org'"),
        ({"pypi": {"hosts": ["*.*.org"]}}, "'*.*.org'"),
        ({"pypi": {"hosts": ["pypi.org:443"]}}, "'pypi.org:443' is not a DNS name"),
        ({"pypi": {"hosts": ["https://pypi.org"]}}, "'https://pypi.org'"),
        ({"pypi": {"hosts": ["-pypi.org"]}}, "'-pypi.org'"),
        ({"pypi": {"hosts": ["pypi.org."]}}, "'pypi.org.'"),
        ({"pypi": {"hosts": ["pypi.org"], "ports": []}}, "egress.pypi.ports"),
        ({"pypi": {"hosts": ["pypi.org"], "ports": 443}}, "egress.pypi.ports"),
        ({"pypi": {"hosts": ["pypi.org"], "ports": [0]}}, "egress.pypi.ports: 0 is not a port"),
        ({"pypi": {"hosts": ["pypi.org"], "ports": [65536]}}, "egress.pypi.ports: 65536"),
        ({"pypi": {"hosts": ["pypi.org"], "ports": ["443"]}}, "egress.pypi.ports: '443'"),
        ({"pypi": {"hosts": ["pypi.org"], "ports": [True]}}, "egress.pypi.ports: True"),
        ({"ok": {"hosts": ["a.org"]}, "bad-one": {"hosts": ["*"]}}, "egress.bad-one.hosts"),
    ],
)
def test_parse_allowlists_errors_name_the_entry(value: object, named: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_allowlists(value)
    assert named in str(raised.value)
