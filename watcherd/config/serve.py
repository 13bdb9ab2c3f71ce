"""Settings of ``watcherd serve`` (config ``serve:``): where it listens, its tokens.

serve:
  host: 127.0.0.1          # another address needs tokens (it always does: see README)
  port: 8787
  tokens_file: /etc/watcherd/tokens.yaml   # default <root>/state/tokens.yaml, mode 0600
  public_url: https://watcherd.example.com  # behind a reverse proxy: the page's origin
  max_connections: 1024
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_PORT = 8787


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tokens_file: Path | None = None  # None: <root>/state/tokens.yaml
    public_url: str | None = None  # the origin pages are served from, when proxied
    max_connections: int = 1024  # open connections at once; more wait in the backlog

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_serve_settings(value: Any) -> ServeSettings:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping (host, port, tokens_file, public_url, ...)")
    unknown = sorted(set(value) - {"host", "port", "tokens_file", "public_url",
                                   "max_connections"})  # fmt: skip
    if unknown:
        raise ValueError(f"unknown key(s): {', '.join(map(str, unknown))}")
    host = value.get("host", "127.0.0.1")
    port = value.get("port", DEFAULT_PORT)
    connections = value.get("max_connections", 1024)
    if not isinstance(host, str) or not host:
        raise ValueError("host: expected an address such as 127.0.0.1")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port: expected 0..65535, got {port!r}")
    if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
        raise ValueError(f"max_connections: expected a positive number, got {connections!r}")
    tokens = value.get("tokens_file")
    if tokens is not None and not isinstance(tokens, str):
        raise ValueError("tokens_file: expected a path")
    public = value.get("public_url")
    if public is not None:
        parts = urlsplit(public) if isinstance(public, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"public_url: expected http(s)://host[:port], got {public!r}")
        public = f"{parts.scheme}://{parts.netloc}"
    return ServeSettings(host, port, Path(tokens) if tokens else None, public, connections)
