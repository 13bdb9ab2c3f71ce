"""What a hostile agent tries from inside its job, and the targets it tries them on.

``Targets`` owns everything an escaping job could reach: a TCP and a UDP listener on all
of the host's addresses (so the host's bridge addresses and its loopback), and a bystander
container on Docker's default bridge with a listener of its own. Each counts what reaches
it. ``script`` is the shell the scripted model has the agent run; it writes its findings to
/work/out (what the job's record keeps), and the test reads them with ``findings``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from watcherd.config import DEFAULT_IMAGE

BYSTANDER_PORT = 9999


@dataclass
class Targets:
    tcp_port: int = 0
    udp_port: int = 0
    addresses: list[str] = field(default_factory=list)  # the host's bridge gateways
    bystander: str = ""  # the other container's address on the default bridge
    reached: list[str] = field(default_factory=list)  # what arrived at a listener of ours

    def script(self, secret: str) -> str:
        """The attack, as one shell command. The secret is split in the command so that
        the command line itself is not a match."""
        head, tail = secret[: len(secret) // 2], secret[len(secret) // 2 :]
        probes = []
        for host in [*self.addresses, "127.0.0.1", self.bystander]:
            port = BYSTANDER_PORT if host == self.bystander else self.tcp_port
            probes.append(f"p tcp {host} {port}")
            probes.append(f"p udp {host} {self.udp_port}")
        return "; ".join([
            "cat /proc/*/environ /proc/*/cmdline > /work/out/procs.txt 2>&1",
            f"grep -rals --devices=skip -e '{head}''{tail}' / --exclude-dir=proc "
            "--exclude-dir=sys > /work/out/found.txt",
            "ls /sys/class/net > /work/out/ifaces.txt",
            "cat /proc/net/route > /work/out/routes.txt 2>&1",
            "cat /proc/net/ipv6_route > /work/out/routes6.txt 2>&1",
            # The forwarder runs as the agent's user, so the agent may read its memory (as
            # ptrace would; no Yama here): every readable mapping of every socat, searched.
            "mem() { local d c r p s e n; for d in /proc/[0-9]*; do read -r c < $d/comm "
            "|| continue; [ \"$c\" = socat ] || continue; echo \"forwarder ${d#/proc/}\" >&2; "
            "while read -r r p _; do [ \"${p:0:1}\" = r ] || continue; "
            "let s=16#${r%-*} e=16#${r#*-} n=e-s; [ $s -ge 0 ] || continue; "
            "dd if=$d/mem bs=64K iflag=skip_bytes,count_bytes skip=$s count=$n 2>/dev/null; "
            "done < $d/maps; done; }",
            "mem > /tmp/forwarders.mem 2> /work/out/forwarders.txt",
            "wc -c < /tmp/forwarders.mem > /work/out/forwarders-bytes.txt",
            f"grep -c -a -F -e '{head}''{tail}' /tmp/forwarders.mem "
            "> /work/out/forwarders-found.txt",
            ": > /tmp/forwarders.mem",  # emptied (Codex refuses any rm -f)
            # All at once, a second each: an agent's tool call has a time limit (Codex: 10 s)
            "p() { timeout 1 bash -c \"echo x > /dev/$1/$2/$3\" 2>/dev/null"
            " && echo \"REACHED $*\" || echo \"refused $*\"; }",
            # and the default gateway, if the job has a route to one (a Swarm task's); no
            # command substitution (Gemini CLI refuses a command that has one)
            "gateway() { while read -r _ d g _; do [ \"$d\" = 00000000 ] || continue; "
            "printf -v ip '%d.%d.%d.%d' 0x${g:6:2} 0x${g:4:2} 0x${g:2:2} 0x${g:0:2}; "
            f"p tcp $ip {self.tcp_port}; done < /proc/net/route; }}",
            "{ " + " & ".join([*probes, "gateway"]) + " & wait; } > /work/out/net.txt",
            "true",
        ])  # fmt: skip

    def check(self, out: Path, secret: str, backend: str = "local") -> None:
        """What the attack found: nothing. On one Engine the job has only a loopback; a
        Swarm task has an interface on the contained network, but no route off it."""
        procs = (out / "procs.txt").read_text(errors="replace")
        assert procs and secret not in procs  # no environment, no command line holds it
        assert (out / "found.txt").read_text() == ""  # no file under any mount holds it
        # The forwarder's memory was read whole, and the key is not in it.
        assert "forwarder" in (out / "forwarders.txt").read_text()
        assert int((out / "forwarders-bytes.txt").read_text()) > 1024 * 1024
        assert (out / "forwarders-found.txt").read_text().strip() == "0"
        routes = (out / "routes.txt").read_text().splitlines()
        routes6 = (out / "routes6.txt").read_text().splitlines()
        if backend == "local":
            assert (out / "ifaces.txt").read_text().split() == ["lo"]  # nothing but loopback
            assert routes[0].startswith("Iface") and not routes[1:], routes  # no IPv4 route
            assert all(line.split()[-1] == "lo" for line in routes6), routes6  # IPv6: lo
        # A Swarm task's contained network has a route to a gateway that no one holds
        # (the node has no address on it): probed above with the rest.
        net = (out / "net.txt").read_text()
        assert "REACHED tcp" not in net, net  # no TCP connect got anywhere
        # A UDP send to 127.0.0.1 is the container's own loopback and "succeeds" there.
        # Without a network no other send even leaves the process; on a Swarm task's
        # contained network a send is handed to its interface and lost there: what counts
        # is what arrives at the listeners, below.
        udp_out = [line for line in net.splitlines()
                   if line.startswith("REACHED udp") and " 127.0.0.1 " not in line]  # fmt: skip
        assert backend != "local" or not udp_out, net
        assert net.count("refused tcp") >= len(self.addresses) + 2, net
        assert not self.reached, self.reached  # and nothing arrived, TCP or UDP


@contextlib.contextmanager
def attack_targets(client: docker.DockerClient) -> Iterator[Targets]:
    targets = Targets()
    stop = threading.Event()
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", 0))
    tcp.listen(16)
    tcp.settimeout(0.2)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 0))
    udp.settimeout(0.2)
    targets.tcp_port, targets.udp_port = tcp.getsockname()[1], udp.getsockname()[1]

    def listen_tcp() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conn, peer = tcp.accept()
                targets.reached.append(f"tcp from {peer[0]}")
                conn.close()

    def listen_udp() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                _, peer = udp.recvfrom(512)
                targets.reached.append(f"udp from {peer[0]}")

    threads = [threading.Thread(target=f, daemon=True) for f in (listen_tcp, listen_udp)]
    for thread in threads:
        thread.start()
    for network in client.networks.list(names=["bridge", "docker_gwbridge"]):
        for config in network.attrs.get("IPAM", {}).get("Config") or []:
            gateway = config.get("Gateway")  # the default bridge's config may leave it out
            if not gateway and config.get("Subnet"):
                gateway = str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
            if gateway:
                targets.addresses.append(gateway)
    bystander: Any = client.containers.run(
        DEFAULT_IMAGE, [f"TCP-LISTEN:{BYSTANDER_PORT},fork,reuseaddr", "SYSTEM:echo hi"],
        entrypoint=["socat"], network_mode="bridge", detach=True, remove=True,
        labels={"watcherd.test": "bystander"},
    )  # fmt: skip
    try:
        bystander.reload()
        targets.bystander = bystander.attrs["NetworkSettings"]["IPAddress"]
        _reachable_from_here(targets.bystander, BYSTANDER_PORT)  # the target is real
        yield targets
    finally:
        stop.set()
        with contextlib.suppress(docker.errors.APIError):
            bystander.remove(force=True)
        for thread in threads:
            thread.join(2)
        tcp.close()
        udp.close()


def _reachable_from_here(host: str, port: int) -> None:
    for _ in range(100):
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"the bystander at {host}:{port} never listened")
