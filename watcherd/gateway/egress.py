"""A job's egress: one CONNECT proxy on one unix socket, allowing only what the job's allowlists
name.

A job's container has only loopback; a forwarder in it turns the bind-mounted socket into
HTTPS_PROXY. So everything a job reaches outside passes here, and this is where it is decided:

- only ``CONNECT host:port`` (no plain-HTTP proxying: nothing is read or rewritten in transit);
- the host must be a DNS name on one of the job's allowlists, on one of that list's ports;
  IP literals in any spelling are refused, so that an allowlist means names, never addresses;
- the proxy resolves the name itself and refuses it if any address is not globally routable
  (loopback, private, link-local and the cloud metadata address, CGNAT, ...): an allowed name
  must not become a way into the host, its network or the daemon's own services;
- it connects to the very address it checked (no second resolution that DNS could answer
  differently), then pipes bytes both ways until both sides have finished.

Every decision is audited: one record when a request is refused, one when a tunnel ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from watcherd.util.sockets import bind_unix

log = logging.getLogger("watcherd.egress")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
Audit = Callable[[dict[str, object]], None]

MAX_HEAD = 8 * 1024  # request line and headers, terminating blank line included
CHUNK = 64 * 1024  # one read of a tunnel; with drain() it bounds what a tunnel buffers
DEFAULT_PORTS = (443,)
# After a refusal, what the client is still sending is read and dropped for this long, or
# this much, before the connection closes.
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024

_LIST_NAME = re.compile(r"[a-z0-9-]+")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
# RFC 9110 token, then the target (no spaces), then the version.
_REQUEST_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/1\.([01])")

_REASONS = {
    200: "Connection established",
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class Allowlist:
    """One named allowlist from the operator's config."""

    name: str
    # "pypi.org" matches that name only; "*.pythonhosted.org" matches one or more labels
    # before the suffix, never the bare apex (list it too if it is meant).
    hosts: tuple[str, ...]
    ports: tuple[int, ...] = DEFAULT_PORTS

    def allows_host(self, host: str) -> bool:
        """Whether ``host`` (a lower-case DNS name, no trailing dot) matches a pattern."""
        return any(_host_matches(pattern, host) for pattern in self.hosts)


def parse_allowlists(value: object) -> dict[str, Allowlist]:
    """The config's `egress:` mapping -> Allowlists, or ValueError naming the bad entry.

    Shape: {name: {hosts: [patterns], ports: [ints]}}; names are [a-z0-9-]+; a pattern is a
    DNS name or '*.' + DNS name (no IPs, no other wildcards); ports 1..65535. ``ports`` may be
    left out (443 only); an empty ``egress:`` (None) is no allowlists. Patterns are compared
    in lower case.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(
            f"egress: expected a mapping of name: {{hosts, ports}}, got {_kind(value)}"
        )
    lists: dict[str, Allowlist] = {}
    for name, entry in value.items():
        if not isinstance(name, str) or not _LIST_NAME.fullmatch(name):
            raise ValueError(f"egress: {name!r} is not a valid allowlist name (use a-z, 0-9, -)")
        where = f"egress.{name}"
        if not isinstance(entry, Mapping):
            raise ValueError(
                f"{where}: expected a mapping with hosts and ports, got {_kind(entry)}"
            )
        unknown = sorted(str(key) for key in entry if key not in ("hosts", "ports"))
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r} (expected hosts, ports)")
        hosts = _parse_patterns(entry.get("hosts"), f"{where}.hosts")
        ports = _parse_ports(entry.get("ports", list(DEFAULT_PORTS)), f"{where}.ports")
        lists[name] = Allowlist(name=name, hosts=hosts, ports=ports)
    return lists


def _parse_patterns(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a non-empty list of host names, got {_kind(value)}")
    patterns: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"{where}: expected a host name, got {_kind(item)}")
        pattern = item.lower()
        name = pattern.removeprefix("*.")
        if _looks_like_ip(name):
            raise ValueError(f"{where}: {item!r} is an IP address; an allowlist names hosts")
        if not _is_dns_name(name):
            raise ValueError(
                f"{where}: {item!r} is not a DNS name or '*.' followed by one"
                " (no other wildcards, ports or schemes)"
            )
        patterns.append(pattern)
    return tuple(dict.fromkeys(patterns))


def _parse_ports(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a non-empty list of port numbers, got {_kind(value)}")
    for item in value:
        # Booleans are ints to Python; YAML's `yes` is not a port.
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 65535:
            raise ValueError(f"{where}: {item!r} is not a port number (1..65535)")
    return tuple(dict.fromkeys(value))


@dataclass(frozen=True)
class EgressPolicy:
    """What one job may reach: the allowlists it picked, and static name -> addresses entries
    that take the resolver's place for those names (like /etc/hosts)."""

    allowlists: tuple[Allowlist, ...]
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class EgressProxy:
    """One job's CONNECT proxy on one unix socket."""

    def __init__(
        self,
        policy: EgressPolicy,
        audit: Audit,
        resolver: Resolver | None = None,
        *,
        max_tunnels: int = 32,
        head_timeout: float = 10.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self._policy = policy
        self._audit_sink = audit
        self._resolver = resolver or _system_resolver
        self._overrides = {name.lower().rstrip("."): tuple(a) for name, a in policy.hosts.items()}
        self._max_tunnels = max_tunnels
        self._head_timeout = head_timeout
        self._connect_timeout = connect_timeout
        self._server: asyncio.AbstractServer | None = None
        self._socket_path: Path | None = None
        self._closing = False
        self._tunnels = 0  # slots taken: from an allowed request until its tunnel ends
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, socket_path: Path) -> None:
        """Listen on ``socket_path``; mode 0o666, for the container's user (the folder that
        holds it is what guards it)."""
        if self._server is not None or self._closing:
            raise RuntimeError("an EgressProxy starts once")
        self._server = await asyncio.start_unix_server(
            self._serve, sock=bind_unix(socket_path), limit=CHUNK
        )
        self._socket_path = socket_path

    async def close(self) -> None:
        """Stop listening and cut every open tunnel: a job that ended keeps nothing open."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._socket_path.unlink()
            self._socket_path = None

    def _refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be reached (its class, e.g. "loopback"), or None.

        Stricter than ``is_global``: anything special-purpose is refused by name, and then
        whatever ``ipaddress`` does not call global, and in IPv6 whatever is outside
        global unicast (2000::/3)."""
        return _address_class(address)

    # One connection, from its request head to the end of its tunnel.

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closing or task is None:
            writer.transport.abort()
            return
        self._tasks.add(task)
        started = time.monotonic()
        try:
            try:
                await self._handle(reader, writer, started)
            except _Refused as refused:
                self._audit("deny", refused.target, refused.address, refused.reason, 0, 0, started)
                if refused.status:
                    _respond(writer, refused.status, refused.reason)
                    await _linger(reader, writer)
        except asyncio.CancelledError:
            # close() cut it. Ending cancelled would make asyncio (3.11) log the connection
            # callback's CancelledError as an error; anything else cancelled it, say so.
            if not self._closing:
                raise
        except Exception:
            log.exception("egress: a connection failed")
        finally:
            self._tasks.discard(task)
            if self._closing:
                writer.transport.abort()
            else:
                writer.close()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, started: float
    ) -> None:
        try:
            async with asyncio.timeout(self._head_timeout):
                head, rest = await _read_head(reader)
        except TimeoutError:
            reason = f"no full request head within {self._head_timeout:g}s"
            raise _Refused(0, reason) from None
        if head is None:  # the client went away before a full head
            if rest:
                raise _Refused(0, "the client left before a full request head")
            return
        host, port = self._check_request(head)
        if self._tunnels >= self._max_tunnels:
            target = f"{host}:{port}"
            raise _Refused(503, f"too many open tunnels (at most {self._max_tunnels})", target)
        self._tunnels += 1
        try:
            await self._tunnel(reader, writer, host, port, rest, started)
        finally:
            self._tunnels -= 1

    def _check_request(self, head: bytes) -> tuple[str, int]:
        """(host, port) of an allowed CONNECT request head, or _Refused saying why not."""
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        match = _REQUEST_LINE.fullmatch(request_line)
        if match is None:
            raise _Refused(400, "malformed request line")
        method, raw_target = match.group(1), match.group(2)
        target = _printable(raw_target)
        if method != "CONNECT":
            raise _Refused(405, f"only CONNECT is served, not {_printable(method)}", target)
        host, sep, port_text = raw_target.rpartition(":")
        if not sep or not port_text.isdigit() or len(port_text) > 5:
            raise _Refused(400, "the CONNECT target must be host:port", target)
        port = int(port_text)
        host = host.lower()
        if host.startswith("[") or _looks_like_ip(host):
            reason = f"{_printable(host)} is an IP address; only names are allowed"
            raise _Refused(403, reason, target)
        host = host.removesuffix(".")
        if not _is_dns_name(host):
            raise _Refused(403, f"{_printable(host)} is not a DNS name", target)
        refusal = self._policy_refusal(host, port)
        if refusal is not None:
            raise _Refused(403, refusal, f"{host}:{port}")
        return host, port

    def _policy_refusal(self, host: str, port: int) -> str | None:
        lists = self._policy.allowlists
        if not lists:
            return "this job has no egress allowlists"
        matching = [allowlist for allowlist in lists if allowlist.allows_host(host)]
        if not matching:
            names = ", ".join(allowlist.name for allowlist in lists)
            return f"{host} is on none of this job's allowlists ({names})"
        ports = sorted({p for allowlist in matching for p in allowlist.ports})
        if port not in ports:
            allowed = ", ".join(str(p) for p in ports)
            return f"port {port} is not allowed for {host} (allowed: {allowed})"
        return None

    async def _tunnel(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        port: int,
        rest: bytes,
        started: float,
    ) -> None:
        target = f"{host}:{port}"
        try:
            address, (up_reader, up_writer) = await self._connect(host, port)
        except asyncio.CancelledError:
            self._audit("deny", target, None, "cut: the proxy closed", 0, 0, started)
            raise
        counts = [0, 0]  # bytes up (job -> outside), bytes down
        end_reason: str | None = None
        try:
            writer.write(_status_line(200) + b"\r\n")
            if rest:
                up_writer.write(rest)
                counts[0] += len(rest)
            await _pipe(reader, writer, up_reader, up_writer, counts)
        except asyncio.CancelledError:
            end_reason = "cut: the proxy closed"
            raise
        except OSError as exc:
            end_reason = f"ended by an error: {_printable(str(exc))}"
        finally:
            if end_reason is None:
                up_writer.close()
            else:
                up_writer.transport.abort()
            self._audit("allow", target, str(address), end_reason, counts[0], counts[1], started)

    async def _connect(
        self, host: str, port: int
    ) -> tuple[IPAddress, tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """Resolve, check every address, connect to one of them (pinned: never to the name
        again, which DNS could answer differently); or _Refused."""
        target = f"{host}:{port}"
        deadline = asyncio.get_running_loop().time() + self._connect_timeout
        try:
            async with asyncio.timeout_at(deadline):
                found = await self._resolve(host, port)
        except TimeoutError:
            raise _Refused(504, f"resolving {host} timed out", target) from None
        except (OSError, ValueError) as exc:
            raise _Refused(502, f"cannot resolve {host}: {_printable(str(exc))}", target) from None
        if not found:
            raise _Refused(502, f"{host} resolves to no address", target)
        addresses: list[IPAddress] = []
        for text in found:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                reason = f"{host} resolves to {_printable(text)!r}, not an address"
                raise _Refused(502, reason, target) from None
            refusal = self._refusal(address)
            if refusal is not None:
                reason = f"{host} resolves to {address}, a {refusal} address"
                raise _Refused(403, reason, target, str(address))
            addresses.append(address)
        failure = ""
        for address in addresses:
            try:
                async with asyncio.timeout_at(deadline):
                    streams = await asyncio.open_connection(str(address), port, limit=CHUNK)
                return address, streams
            except TimeoutError:
                reason = f"connecting to {target} at {address} timed out"
                raise _Refused(504, reason, target, str(address)) from None
            except OSError as exc:
                failure = f"cannot connect to {target} at {address}: {exc.strerror or exc}"
        raise _Refused(502, failure, target, str(addresses[-1]))

    async def _resolve(self, host: str, port: int) -> list[str]:
        override = self._overrides.get(host)
        found = list(override) if override is not None else await self._resolver(host, port)
        return list(dict.fromkeys(found))

    def _audit(
        self,
        decision: str,
        target: str | None,
        address: str | None,
        reason: str | None,
        bytes_up: int,
        bytes_down: int,
        started: float,
    ) -> None:
        """One record, when it is decided (a refusal) or ends (a tunnel): ``time`` is then,
        ``duration_ms`` how long since the client connected. Never raises."""
        record: dict[str, object] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "kind": "egress",
            "decision": decision,
            "target": target,
            "address": address,
            "reason": reason,
            "bytes_up": bytes_up,
            "bytes_down": bytes_down,
            "duration_ms": round((time.monotonic() - started) * 1000),
        }
        try:
            self._audit_sink(record)
        except Exception:
            log.exception("egress: the audit of %s failed: %r", target, record)


def _address_class(address: IPAddress) -> str | None:
    """The class of an address a job may not reach ("loopback", "private", ...), or None for
    a globally routable one."""
    if isinstance(address, ipaddress.IPv6Address):
        # Addresses that carry an IPv4 address to where it leads: judged by that one.
        mapped = address.ipv4_mapped
        if mapped is not None:
            inner = _address_class(mapped)
            return None if inner is None else f"IPv4-mapped {inner}"
        if address in _NAT64:  # what DNS64 answers on an IPv6-only host
            inner = _address_class(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
            return None if inner is None else f"NAT64 of {inner}"
        for network, name in _V6_CLASSES:
            if address in network:
                return name
        if address not in _V6_GLOBAL_UNICAST:
            return "reserved (outside 2000::/3)"
    else:
        for network4, name in _V4_CLASSES:
            if address in network4:
                return name
    if address.is_multicast:
        return "multicast"
    if not address.is_global:
        return "non-global"
    return None


def _v4(*pairs: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network, str], ...]:
    return tuple((ipaddress.IPv4Network(net), name) for net, name in pairs)


def _v6(*pairs: tuple[str, str]) -> tuple[tuple[ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.IPv6Network(net), name) for net, name in pairs)


# First match names the class; order matters where ranges nest.
_V4_CLASSES = _v4(
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "this-network (0/8)"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.169.254/32", "link-local (cloud metadata)"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.31.196.0/24", "AS112"),
    ("192.52.193.0/24", "AMT"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", "AS112"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)
_V6_CLASSES = _v6(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "NAT64 (local use)"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001:2::/48", "benchmarking"),
    ("2001:db8::/32", "documentation"),
    ("2001::/23", "IETF protocol assignment"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing (SRv6)"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


class _Refused(Exception):
    """A request refused: the status to answer (0: none, the client is just dropped), a
    one-line reason, and what the audit says it was for."""

    def __init__(
        self, status: int, reason: str, target: str | None = None, address: str | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.target = target
        self.address = address


async def _read_head(reader: asyncio.StreamReader) -> tuple[bytes | None, bytes]:
    """(head up to and including its blank line, bytes read past it); (None, partial) if the
    client ended first. _Refused (431) past MAX_HEAD, having read at most that much."""
    buffer = bytearray()
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            if end + 4 > MAX_HEAD:
                raise _Refused(431, f"request head over {MAX_HEAD} bytes")
            return bytes(buffer[: end + 4]), bytes(buffer[end + 4 :])
        if len(buffer) >= MAX_HEAD:
            raise _Refused(431, f"request head over {MAX_HEAD} bytes")
        chunk = await reader.read(MAX_HEAD - len(buffer))
        if not chunk:
            return None, bytes(buffer)
        buffer += chunk


async def _pipe(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    counts: list[int],
) -> None:
    """Both directions until each has ended; an end in one is passed on as a half-close and
    the other keeps going. An error in either ends both (raised)."""
    up = asyncio.create_task(_pump(client_reader, up_writer, counts, 0))
    down = asyncio.create_task(_pump(up_reader, client_writer, counts, 1))
    try:
        await asyncio.gather(up, down)
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)


async def _pump(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, counts: list[int], index: int
) -> None:
    while data := await source.read(CHUNK):
        sink.write(data)
        counts[index] += len(data)
        await sink.drain()
    if sink.can_write_eof():
        sink.write_eof()


def _respond(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    """A refusal: the status and its reason as a one-line body; the connection then closes."""
    body = (reason + "\n").encode("utf-8", "replace")
    writer.write(
        _status_line(status)
        + b"Content-Type: text/plain; charset=utf-8\r\n"
        + f"Content-Length: {len(body)}\r\n".encode()
        + (b"Allow: CONNECT\r\n" if status == 405 else b"")
        + b"Connection: close\r\n\r\n"
        + body
    )


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After a refusal: half-close, then drop what the client still sends (bounded in time and
    bytes). Closing with unread bytes would reset the connection, and the client could lose
    the answer (a 431 to a head it is still sending)."""
    with contextlib.suppress(OSError, TimeoutError):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER_SECONDS):
            dropped = 0
            while dropped < LINGER_BYTES and (data := await reader.read(CHUNK)):
                dropped += len(data)


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {_REASONS[status]}\r\n".encode()


def _host_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        # One or more labels before the suffix; host is a validated DNS name.
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _is_dns_name(name: str) -> bool:
    """A lower-case DNS host name (letters, digits, hyphens), no trailing dot."""
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        return False  # a numeric last label is how IPv4 spellings look, never a TLD
    return all(_LABEL.fullmatch(label) for label in labels)


def _looks_like_ip(host: str) -> bool:
    """Any spelling of an IP address: dotted, IPv6, and inet_aton's forms (``2130706433``,
    ``0x7f.1``, ``127.1``, octal) as well as anything whose last label is a number."""
    try:
        ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
        return True
    except (OSError, ValueError):  # ValueError: a NUL or a character beyond ASCII
        pass
    last = host.removesuffix(".").rsplit(".", 1)[-1]
    return bool(_NUMERIC_LABEL.fullmatch(last))


def _printable(text: str, limit: int = 200) -> str:
    """Client-given text, safe for a one-line reason and a log: printable, bounded."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."


def _kind(value: object) -> str:
    return "nothing (null)" if value is None else type(value).__name__
