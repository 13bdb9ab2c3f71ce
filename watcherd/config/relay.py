"""Settings of the relays (config ``relay:``), which serve a Swarm job's sockets on the node
its task runs on (README, Swarm):

relay:
  listen: 10.0.0.5:7433          # where the daemon waits for its nodes' relays; none: no
                                 # relays (a task on another node reaches no model)
  sockets_dir: /run/watcherd/jobs  # node-local, the same path on every node
  credential: /etc/watcherd/relay.pem  # default <root>/state/relay.pem, made at first start
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SOCKETS_DIR = Path("/run/watcherd/jobs")


@dataclass(frozen=True)
class RelaySettings:
    listen: tuple[str, int] | None = None
    sockets_dir: Path = DEFAULT_SOCKETS_DIR
    credential: Path | None = None  # None: <root>/state/relay.pem

    def credential_in(self, state: Path) -> Path:
        """The credential's file, given the root's state/ folder (its default place)."""
        return self.credential or state / "relay.pem"


def parse_address(value: Any) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as a pair, or ValueError saying what is wrong."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"expected host:port, got {value!r}")
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"expected host:port with a port 1..65535, got {value!r}")
    return host, int(port)


def parse_relay_settings(value: Any) -> RelaySettings:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping (listen, sockets_dir, credential)")
    unknown = sorted(set(value) - {"listen", "sockets_dir", "credential"})
    if unknown:
        raise ValueError(f"unknown key(s): {', '.join(map(str, unknown))}")
    listen = value.get("listen")
    try:
        address = parse_address(listen) if listen is not None else None
    except ValueError as exc:
        raise ValueError(f"listen: {exc}") from None
    folder = value.get("sockets_dir", str(DEFAULT_SOCKETS_DIR))
    if not isinstance(folder, str) or not folder.startswith("/"):
        raise ValueError(f"sockets_dir: expected an absolute path, got {folder!r}")
    credential = value.get("credential")
    if credential is not None and (not isinstance(credential, str) or not credential):
        raise ValueError("credential: expected a path")
    return RelaySettings(address, Path(folder), Path(credential) if credential else None)
