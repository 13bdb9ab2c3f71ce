"""A two-node Docker Swarm on this machine, for tests only: two more Engines, each in a
network namespace of its own (a manager and a worker, joined over a veth pair between the
two namespaces), sharing this machine's filesystem as nodes share a network filesystem.

The main Engine's swarm is advertised on 127.0.0.1, which no other namespace can reach;
this one is the test's own. The worker has what a node of its own would: a mount namespace
where the relays' sockets folder (SOCKETS_DIR) is its own tmpfs, and a link to this
namespace (the daemon's, at RELAY_HOST) over which its relay reaches the daemon.

Data roots stay between runs (the loaded test image with them); exec roots, namespaces,
swarm state and networks are made afresh and removed at the end, and a stale set (a test
killed before its teardown) is ended first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import docker.errors

from tests.support.helpers import cli_environ, wait_for
from watcherd.backends.swarm import CONTAINED_SETTINGS

NODES = {"mgr": "10.213.0.2", "wrk": "10.213.0.3"}
SOCKETS_DIR = Path("/run/wdt-jobs")  # relay.sockets_dir: node-local on the worker
RELAY_HOST, RELAY_PEER = "10.213.1.1", "10.213.1.2"  # this namespace, the worker's


class Node:
    def __init__(self, name: str, address: str, own_sockets_dir: bool = False) -> None:
        self.name, self.address = name, address
        self.own_sockets_dir = own_sockets_dir  # SOCKETS_DIR a tmpfs of its own
        self.netns = f"wdt-{name}"
        self.data_root = Path(f"/var/lib/watcherd-test-swarm-{name}")
        self.run_dir = Path(f"/run/wdt-{name}")  # short: socket paths stop at 108 bytes
        self.url = f"unix://{self.run_dir / 'docker.sock'}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url)

    def start(self, log: Path) -> None:
        self.run_dir.mkdir(exist_ok=True)
        shutil.rmtree(self.data_root / "swarm", ignore_errors=True)  # a fresh swarm each time
        # ... and fresh networks: a swarm network's local copy outlives its swarm here
        shutil.rmtree(self.data_root / "network", ignore_errors=True)
        run = ["ip", "-n", self.netns]
        subprocess.run([*run, "link", "set", "lo", "up"], check=True)
        subprocess.run([*run, "link", "add", "wdtb0", "type", "bridge"], check=True)
        subprocess.run([*run, "link", "set", "wdtb0", "up"], check=True)
        self._run_engine(log)

    def restart(self, log: Path, down_for: float = 0.0) -> None:
        """Stopped as systemd stops dockerd (SIGTERM: without live-restore its containers
        die), and started again with its swarm state."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(60)
        wait_for(lambda: not self._answers(), 10, f"Engine {self.name} down")
        time.sleep(down_for)  # the outage itself, not a synchronisation
        self._run_engine(log)

    def _run_engine(self, log: Path) -> None:
        # nsenter, not `ip netns exec`: that remounts /sys, and dockerd needs the cgroups.
        own_mounts = []
        if self.own_sockets_dir:  # a mount namespace where SOCKETS_DIR is this node's own
            SOCKETS_DIR.mkdir(exist_ok=True)
            own_mounts = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                          f"mount -t tmpfs -o mode=755 wdt-jobs {SOCKETS_DIR} && exec \"$@\"",
                          "sh"]  # fmt: skip
        self.proc = subprocess.Popen(
            [*own_mounts, "nsenter", f"--net=/run/netns/{self.netns}", "dockerd",
             "--data-root", str(self.data_root), "--exec-root", str(self.run_dir),
             "--pidfile", str(self.run_dir / "dockerd.pid"), "-H", self.url,
             "--bridge=wdtb0", "--iptables=false", "--ip6tables=false"],
            stdout=subprocess.DEVNULL, stderr=log.open("ab"), start_new_session=True,
        )  # fmt: skip
        wait_for(self._answers, 60, f"Engine {self.name}")

    def enter(self) -> list[str]:
        """A command prefix that runs in this node's namespaces (its Engine's)."""
        assert self.proc is not None
        return [
            "nsenter",
            f"--net=/run/netns/{self.netns}",
            f"--mount=/proc/{self.proc.pid}/ns/mnt",
        ]

    def _is_our_engine(self, pid: int) -> bool:
        """Whether ``pid`` is still this node's dockerd (not a recycled pid)."""
        try:
            return str(self.run_dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except docker.errors.DockerException:
            return False

    def crash(self) -> None:
        """The node dies at once: its Engine, containerd, shims and every container process."""
        containers = [c.id for c in self.client.containers.list(ignore_removed=True)]
        subprocess.run(["pkill", "-9", "-f", str(self.run_dir)], check=False)
        for container in containers:
            for procs in Path("/sys/fs/cgroup").glob(f"*/docker/{container}/cgroup.procs"):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)

    def end(self) -> None:
        subprocess.run(["pkill", "-9", "-f", str(self.run_dir)], check=False)
        if self.proc is not None:
            self.proc.wait(30)  # reaped: a zombie would look alive
            self.proc = None
        with contextlib.suppress(OSError, ValueError):  # a stale one, not our child
            pid = int((self.run_dir / "dockerd.pid").read_text())
            wait_for(lambda: not self._is_our_engine(pid), 30, "an Engine to end")
        subprocess.run(["umount", "-R", "-l", str(self.run_dir)], check=False,
                       capture_output=True)  # fmt: skip
        shutil.rmtree(self.run_dir, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", self.netns], check=False, capture_output=True)


def contained_network_settings(client: docker.DockerClient) -> None:
    """The node-local settings of watcherd's contained network, on a node the daemon does
    not run on (README, Security model: `docker network create --config-only ...`)."""
    api = client.api
    api._result(api._post_json(api._url("/networks/create"), data=CONTAINED_SETTINGS), True)


class TwoNodeSwarm:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.manager = Node("mgr", NODES["mgr"])
        self.worker = Node("wrk", NODES["wrk"], own_sockets_dir=True)
        self.relay: subprocess.Popen[bytes] | None = None

    def start(self, images: list[str]) -> TwoNodeSwarm:
        self.close()  # a stale set first
        self.base.mkdir(parents=True, exist_ok=True)
        for node in (self.manager, self.worker):
            subprocess.run(["ip", "netns", "add", node.netns], check=True)
        subprocess.run(
            ["ip", "link", "add", "wdt-mgr-n", "netns", self.manager.netns, "type", "veth",
             "peer", "name", "wdt-wrk-n", "netns", self.worker.netns], check=True,
        )  # fmt: skip
        subprocess.run(["ip", "link", "add", "wdt-h", "type", "veth", "peer", "name", "wdt-h-n",
                        "netns", self.worker.netns], check=True)  # fmt: skip
        subprocess.run(["ip", "addr", "add", f"{RELAY_HOST}/30", "dev", "wdt-h"], check=True)
        subprocess.run(["ip", "link", "set", "wdt-h", "up"], check=True)
        to_worker = ["ip", "-n", self.worker.netns]
        subprocess.run(
            [*to_worker, "addr", "add", f"{RELAY_PEER}/30", "dev", "wdt-h-n"], check=True
        )
        subprocess.run([*to_worker, "link", "set", "wdt-h-n", "up"], check=True)
        for node in (self.manager, self.worker):
            device = f"wdt-{node.name}-n"
            subprocess.run(["ip", "-n", node.netns, "addr", "add", f"{node.address}/24", "dev",
                            device], check=True)  # fmt: skip
            subprocess.run(["ip", "-n", node.netns, "link", "set", device, "up"], check=True)
            node.start(self.base / f"dockerd-{node.name}.log")
            self.load(node, images)
        manager = self.manager.client
        manager.swarm.init(advertise_addr=self.manager.address)
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        self.worker.client.swarm.join([f"{self.manager.address}:2377"], token)
        wait_for(lambda: len(self.ready_nodes()) == 2, 60, "both nodes ready")
        contained_network_settings(self.worker.client)  # as README, Swarm, tells operators
        return self

    def start_relay(self, port: int, credential: Path) -> None:
        """`watcherd relay` on the worker, in its namespaces, as an operator runs it there."""
        log = (self.base / "relay.log").open("ab")
        self.relay = subprocess.Popen(
            [*self.worker.enter(), sys.executable, "-m", "watcherd", "--root", str(self.base),
             "relay", "--connect", f"{RELAY_HOST}:{port}", "--credential", str(credential),
             "--sockets-dir", str(SOCKETS_DIR)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=cli_environ(),
        )  # fmt: skip

    def stop_relay(self) -> None:
        if self.relay is not None:
            self.relay.terminate()
            self.relay.wait(30)
            self.relay = None

    def relay_log(self) -> str:
        path = self.base / "relay.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def ready_nodes(self) -> list[str]:
        nodes = self.manager.client.nodes.list()
        return [n.id for n in nodes if n.attrs["Status"]["State"] == "ready"]

    def node_id(self, node: Node) -> str:
        return str(node.client.info()["Swarm"]["NodeID"])

    def label(self, node: Node, **labels: str) -> None:
        found = self.manager.client.nodes.get(self.node_id(node))
        spec = found.attrs["Spec"]
        found.update({**spec, "Labels": {**spec.get("Labels", {}), **labels}})

    @staticmethod
    def load(node: Node, images: list[str]) -> None:
        client = node.client
        for image in images:
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:  # once: the data root keeps it
                saved = docker.from_env().images.get(image).save(named=True)
                client.images.load(b"".join(saved))

    def close(self) -> None:
        self.stop_relay()
        for node in (self.worker, self.manager):
            node.end()
        subprocess.run(["ip", "link", "del", "wdt-h"], check=False, capture_output=True)
