"""The hub and a relay over real TLS and real unix sockets (no Docker): a job's socket
served on "another node" (a folder of its own), carried back to the job's own socket; a
job ended is gone there; nothing without the credential gets in."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import wait_for
from watcherd.relay import wire
from watcherd.relay.credential import CredentialError, client_context, ensure_credential
from watcherd.relay.hub import Hub
from watcherd.relay.node import Relay

JOB = "20261207T120000Z-job-abc123"


class EchoJob:
    """What the gateway is to a job: a unix socket in the job's folder (here, an echo)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(folder / "model.sock"))
        self.listener.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(b"echo:" + data)


class RelayThread:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Future[None] | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.relay.run())
        self.loop.run_until_complete(asyncio.wait([self.task]))
        rest = asyncio.all_tasks(self.loop)  # its connections' ends, as asyncio.run does
        for task in rest:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(lambda: self.task and self.task.cancel())
        self.thread.join(10)


@pytest.fixture
def credential(tmp_path: Path) -> Path:
    return ensure_credential(tmp_path / "state" / "relay.pem")


@pytest.fixture
def hub(tmp_path: Path, credential: Path) -> Iterator[Hub]:
    hub = Hub(tmp_path / "links", ("127.0.0.1", 0), credential, ready_seconds=5)
    hub.start()
    yield hub
    hub.stop()


@pytest.fixture
def job(tmp_path: Path) -> EchoJob:
    return EchoJob(tmp_path / "run" / JOB)


@pytest.fixture
def relay(tmp_path: Path, hub: Hub, credential: Path) -> Iterator[RelayThread]:
    """A relay on "node-2" (its own folder), connected to ``hub``."""
    relay = start_relay(hub, credential, tmp_path / "node-2")
    yield relay
    relay.stop()


def start_relay(hub: Hub, credential: Path, folder: Path, node: str = "node-2") -> RelayThread:
    assert hub.address is not None
    relay = RelayThread(Relay(hub.address, client_context(credential), folder, node=node))
    wait_for(lambda: node in hub.relays(), 10, "the relay connected")
    return relay


def ask(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        conn.sendall(data)
        return conn.recv(65536)


def test_a_jobs_socket_is_served_on_the_other_node_and_carried_back(
    tmp_path: Path, hub: Hub, relay: RelayThread, job: EchoJob
) -> None:
    hub.serve(JOB, job.folder)  # returns once the relay says its sockets are there
    there = tmp_path / "node-2" / JOB
    assert there.is_dir() and not there.is_symlink()
    assert (tmp_path / "links" / JOB).resolve() == job.folder  # this node: a link
    assert ask(there / "model.sock", b"hello") == b"echo:hello"
    assert (there / "model.sock").stat().st_mode & 0o777 == 0o666
    hub.withdraw(JOB)
    wait_for(lambda: not there.exists(), 10, "the job's folder gone on the other node")
    assert not (tmp_path / "links" / JOB).exists()


def test_a_relay_that_connects_later_is_given_the_jobs_already_served(
    tmp_path: Path, hub: Hub, credential: Path, job: EchoJob
) -> None:
    hub.serve(JOB, job.folder)
    relay = start_relay(hub, credential, tmp_path / "node-2")
    try:
        there = tmp_path / "node-2" / JOB / "model.sock"
        wait_for(there.exists, 10, "the served job's socket")
        assert ask(there, b"x") == b"echo:x"
    finally:
        relay.stop()


def test_a_connection_cut_when_its_job_ends(
    tmp_path: Path, hub: Hub, relay: RelayThread, job: EchoJob
) -> None:
    hub.serve(JOB, job.folder)
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(str(tmp_path / "node-2" / JOB / "model.sock"))
        conn.sendall(b"a")
        assert conn.recv(100) == b"echo:a"
        hub.withdraw(JOB)
        assert conn.recv(100) == b""  # ended, not left open


def test_no_relay_without_the_credential(tmp_path: Path, hub: Hub) -> None:
    other = ensure_credential(tmp_path / "other.pem")
    relay = RelayThread(Relay(hub.address or ("", 0), client_context(other), tmp_path / "n2"))
    try:
        job = EchoJob(tmp_path / "run" / JOB)
        hub.serve(JOB, job.folder)
        wait_for(lambda: relay.relay.failures >= 2, 10, "the relay to be refused twice")
        assert hub.relays() == []
        assert not (tmp_path / "n2" / JOB).exists()
    finally:
        relay.stop()


def test_a_client_without_a_certificate_is_refused_in_the_handshake(
    tmp_path: Path, hub: Hub, credential: Path
) -> None:
    job = EchoJob(tmp_path / "run" / JOB)
    hub.serve(JOB, job.folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(credential))  # trusts the hub, proves nothing
    assert hub.address is not None
    with (
        socket.create_connection(hub.address, timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(wire.encode(connect=JOB, socket="model.sock") + b"hello")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            if not tls.recv(100):  # TLS 1.3: the refusal arrives with the first read
                raise ConnectionResetError


@pytest.mark.parametrize("first", [
    wire.encode(connect="20261207T000000Z-other-000000", socket="model.sock"),  # not served
    wire.encode(connect=JOB, socket="../model.sock"),
    wire.encode(connect="../" + JOB, socket="model.sock"),
    b"not json\n",
    b"x" * 5000 + b"\n",
], ids=["not-served", "socket-path", "id-path", "not-json", "long-line"])  # fmt: skip
def test_the_hub_carries_nothing_but_a_served_jobs_own_sockets(
    tmp_path: Path, hub: Hub, credential: Path, first: bytes
) -> None:
    job = EchoJob(tmp_path / "run" / JOB)
    hub.serve(JOB, job.folder)
    assert hub.address is not None
    with (
        socket.create_connection(hub.address, timeout=10) as raw,
        client_context(credential).wrap_socket(raw) as tls,
    ):
        tls.sendall(first + b"hello")
        assert tls.recv(100) == b""  # closed, nothing echoed


def test_a_credential_readable_by_others_is_refused(credential: Path) -> None:
    credential.chmod(0o644)
    with pytest.raises(CredentialError, match="chmod 600"):
        client_context(credential)


def test_a_restarted_relay_and_a_restarted_daemon_keep_the_folder_a_task_has_mounted(
    tmp_path: Path, credential: Path
) -> None:
    """A running task has its folder mounted: made anew, the task would never see it. So a
    relay that stops leaves it, and one that starts binds its sockets there again; a
    daemon started again has the relays keep its running jobs' folders until their lives
    open them again (``keep``), rather than remove what it does not serve yet."""
    job = EchoJob(tmp_path / "run" / JOB)
    there = tmp_path / "node-2" / JOB
    first = Hub(tmp_path / "links", ("127.0.0.1", 0), credential)
    first.start()
    relay = start_relay(first, credential, tmp_path / "node-2")
    first.serve(JOB, job.folder)
    inode = there.stat().st_ino
    relay.stop()
    assert there.stat().st_ino == inode  # left for the task
    first.stop()

    again = Hub(tmp_path / "links", ("127.0.0.1", 0), credential)
    again.keep([JOB])  # in running/ when it started; its life has not opened it yet
    again.start()
    relay = start_relay(again, credential, tmp_path / "node-2")
    try:
        wait_for(lambda: (there / "model.sock").exists(), 10, "its sockets bound again")
        assert there.stat().st_ino == inode
        assert ask(there / "model.sock", b"early") == b""  # kept, not yet served
        again.serve(JOB, job.folder)
        assert ask(there / "model.sock", b"later") == b"echo:later"
        assert there.stat().st_ino == inode
        again.withdraw(JOB)
        wait_for(lambda: not there.exists(), 10, "removed once its job ended")
    finally:
        relay.stop()
        again.stop()


def test_a_relay_removes_the_folders_of_jobs_the_daemon_no_longer_has(
    tmp_path: Path, hub: Hub, credential: Path
) -> None:
    stale = tmp_path / "node-2" / "20261201T000000Z-gone-000000"  # a relay's before this
    stale.mkdir(parents=True)
    (tmp_path / "node-2" / "a-link").symlink_to(tmp_path)  # the daemon's node: not its own
    relay = start_relay(hub, credential, tmp_path / "node-2")
    try:
        wait_for(lambda: not stale.exists(), 10, "the stale folder removed")
        assert (tmp_path / "node-2" / "a-link").is_symlink()
    finally:
        relay.stop()


def test_a_job_holds_at_most_max_connections_through_a_relay(
    tmp_path: Path, hub: Hub, relay: RelayThread, job: EchoJob
) -> None:
    hub.serve(JOB, job.folder)
    path = str(tmp_path / "node-2" / JOB / "model.sock")
    with contextlib.ExitStack() as held:
        conns = []
        for n in range(wire.MAX_CONNECTIONS + 1):
            conn = held.enter_context(socket.socket(socket.AF_UNIX))
            conn.settimeout(10)
            conn.connect(path)
            conn.sendall(b"%d" % n)
            conns.append(conn)
        answers = [conn.recv(100) for conn in conns[:-1]]
        assert answers == [b"echo:%d" % n for n in range(wire.MAX_CONNECTIONS)]
        with contextlib.suppress(ConnectionResetError):  # closed with its bytes unread
            assert conns[-1].recv(100) == b""  # one too many: closed
    assert oct((tmp_path / "node-2").stat().st_mode & 0o777) == oct(wire.SOCKETS_DIR_MODE)
