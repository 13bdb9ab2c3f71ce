"""What one running job may reach through the gateway, and what it has spent.

A grant is made when a job's container is about to start and closed when it has ended:
its token is good only on its own socket and only in between. Its upstreams are the
operator's, fixed when it is made; nothing in a request can change where a call goes.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watcherd.gateway.meter import Tokens

TOKEN_PREFIX = "wdj-"  # so a token in a log or a paste is recognisable as a job's, not a key


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Upstream:
    api: str  # a name in gateway.apis.APIS
    base_url: str  # the operator's, without a trailing slash
    key: str | None = None  # the operator's key; None: the job's own credential goes through
    # Set on every call in place of what the job sent (a login's account, say).
    headers: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # a key never reaches a log by way of a repr
        return f"Upstream(api={self.api!r}, base_url={self.base_url!r})"


@dataclass
class Grant:
    job_id: str
    token: str
    upstreams: Mapping[str, Upstream]  # route prefix (the first path segment) -> upstream
    audit_path: Path
    token_budget: int = 0  # input + output tokens; 0: no cap
    allow_network_tools: bool = False
    used: Tokens = field(default_factory=Tokens)
    calls: int = 0
    refused: int = 0
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __repr__(self) -> str:
        return f"Grant(job_id={self.job_id!r}, upstreams={list(self.upstreams)!r})"

    @property
    def over_budget(self) -> bool:
        return bool(self.token_budget) and self.used.total >= self.token_budget

    def spend(self, tokens: Tokens) -> None:
        with self._lock:
            self.used.input += tokens.input
            self.used.output += tokens.output
            self.calls += 1

    def audit(self, record: Mapping[str, Any]) -> None:
        """One JSON line in the job's audit file, which only the daemon can write."""
        line = json.dumps({"time": _now(), **record}, separators=(",", ":")) + "\n"
        with self._lock:
            fd = os.open(self.audit_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                         0o600)  # fmt: skip
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


@dataclass(frozen=True)
class Spent:
    """What a closed grant reports for the job's record."""

    input_tokens: int
    output_tokens: int
    calls: int
    refused: int
    over_budget: bool


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
