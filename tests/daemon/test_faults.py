"""Faults that must never need a restart: kill -9 in every window, a full disk, a dead
daemon beside a live one, writers that pause mid-file. On a real Docker Engine with the
stand-in image; slow (a minute or two in all): `pytest -m slow` runs just these.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.backends import on_both_backends, remove_jobs_of
from tests.support.helpers import (
    DaemonProcess,
    StartDaemon,
    exit_record,
    finished_jobs,
    wait_finished,
    wait_for,
    write_job,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


class ContainerStarts:
    """Counts container starts per job id as they happen. Docker keeps only its last 256
    events, so they cannot be counted afterwards."""

    def __init__(self, client: docker.DockerClient, root: Path) -> None:
        self.counts: Counter[str] = Counter()
        self._stream = client.events(
            decode=True,
            filters={"type": "container", "event": "start", "label": f"watcherd.root={root}"},
        )
        threading.Thread(target=self._count, daemon=True).start()

    def _count(self) -> None:
        try:
            for event in self._stream:
                self.counts[event["Actor"]["Attributes"]["watcherd.job"]] += 1
        except Exception:  # the stream is closed by close()
            pass

    def close(self) -> Counter[str]:
        time.sleep(0.5)  # the last start events are in flight
        self._stream.close()
        return self.counts


@on_both_backends
def test_kill_9_in_every_window_runs_every_job_exactly_once(
    work_root: Path, start_daemon: StartDaemon, repo_url: str, docker_client: docker.DockerClient
) -> None:
    starts = ContainerStarts(docker_client, work_root)
    names = [f"storm{i:02d}.yaml" for i in range(60)]
    (work_root / "inbox").mkdir()
    for name in names:
        write_job(work_root / "inbox", name, repo_url=repo_url, prompt="succeed", retries=0)
    rng = random.Random(7)
    kills = 0
    deadline = time.monotonic() + 240
    while len(finished_jobs(work_root)["done"]) < len(names):
        assert time.monotonic() < deadline, finished_jobs(work_root)
        daemon = start_daemon(concurrency=2)
        time.sleep(rng.uniform(0.05, 0.35))  # a kill at a random point of the daemon's work
        daemon.kill()
        kills += 1
        if kills > 400:  # it must make progress between kills: finish calmly
            break
    start_daemon(concurrency=2, rescan_seconds=1)
    wait_for(lambda: len(finished_jobs(work_root)["done"]) == len(names), 120, "all jobs done")

    jobs = finished_jobs(work_root)
    assert jobs["failed"] == [] and jobs["running"] == [] and jobs["inbox"] == []
    dropped = sorted(
        exit_record(work_root, work_root / "done" / n)["job_file"] for n in jobs["done"]
    )
    assert dropped == sorted(names)  # every job_file right
    counts = starts.close()
    assert len(counts) == len(names) and set(counts.values()) == {1}  # each ran exactly once
    # Nothing left for finished jobs; what kill -9 cut (a claim between its state write and
    # its rename, a half-written state file) goes at a rescan once a few seconds old.
    wait_for(lambda: not list((work_root / "state").iterdir()), 30, "state/ to empty")
    print(f"\n{kills} kill -9s over {len(names)} jobs")


@pytest.fixture
def small_root(tmp_path: Path) -> Any:
    """A work root on its own 48 MB tmpfs, which the test can fill."""
    root = tmp_path / "work"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(root)], check=True)
    yield root
    subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_full_disk_is_waited_out_and_every_job_filed_without_a_restart(
    small_root: Path, daemon_config: dict[str, Any], repo_url: str,
    docker_client: docker.DockerClient,
) -> None:  # fmt: skip
    config = {**daemon_config, "min_free_disk": "1m", "rescan_seconds": 1}
    daemon = DaemonProcess(small_root, config).start()
    try:
        staging = small_root / "staging"
        staging.mkdir()
        names = [f"ok{i}.yaml" for i in range(4)] + [f"bad{i}.yaml" for i in range(3)]
        for name in names:
            body = {"repo_url": repo_url, "prompt": "succeed"} if name.startswith("ok") else {}
            (staging / name).write_text(json.dumps(body) if body else "not: [valid\n")
        filler = small_root / "filler"
        with filler.open("wb") as handle:  # fill the filesystem to the last byte
            try:
                while True:
                    handle.write(b"\0" * 1024 * 1024)
            except OSError:
                pass
        for name in names:  # a rename needs no room: the jobs arrive on a full disk
            (staging / name).rename(small_root / "inbox" / name)
        time.sleep(3)  # several rescans and backoffs on a full disk
        assert daemon.alive(), daemon.log()
        assert finished_jobs(small_root)["running"] == []  # nothing parked for good
        filler.unlink()
        for name in names:
            folder, path = wait_finished(small_root, name, timeout=60)
            assert folder == ("done" if name.startswith("ok") else "failed"), name
            assert exit_record(small_root, path)["job_file"] == name
        assert daemon.alive()
        assert "waiting it out" in daemon.log()
    finally:
        daemon.stop()
        remove_jobs_of(docker_client, small_root)


@on_both_backends
def test_a_surviving_daemon_takes_over_a_dead_ones_jobs(
    work_root: Path, start_daemon: StartDaemon, repo_url: str, docker_client: docker.DockerClient
) -> None:
    starts = ContainerStarts(docker_client, work_root)
    doomed = start_daemon(concurrency=4, rescan_seconds=60)
    names = [f"orphan{i}.yaml" for i in range(4)]
    for name in names:
        write_job(work_root / "inbox", name, repo_url=repo_url, prompt="sleep 2", retries=0)
    wait_for(lambda: len(finished_jobs(work_root)["running"]) == 4, 30, "all four claimed")
    doomed.kill()  # for good
    took_over_at = time.monotonic()
    survivor = start_daemon(concurrency=4, rescan_seconds=2)
    for name in names:
        assert wait_finished(work_root, name, timeout=30)[0] == "done"
    assert time.monotonic() - took_over_at < 15
    assert "taking over job" in survivor.log()
    assert set(starts.close().values()) == {1}  # adopted, not run again


def test_writers_that_pause_mid_file_are_never_claimed_early(
    work_root: Path, start_daemon: StartDaemon, repo_url: str
) -> None:
    start_daemon(concurrency=2, settle_seconds=0.1)
    inbox = work_root / "inbox"
    rng = random.Random(11)
    names = [f"slow{i:03d}.yaml" for i in range(100)]

    def write(name: str, pause: float) -> None:
        # Valid only once complete: the prompt comes last, after the pause.
        with (inbox / name).open("w") as handle:
            handle.write(f"repo_url: {repo_url}\n")
            handle.flush()
            time.sleep(pause)
            handle.write("prompt: succeed\n")

    writers = [threading.Thread(target=write, args=(n, rng.uniform(0.3, 2.0))) for n in names]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    for name in names:
        folder, path = wait_finished(work_root, name, timeout=120)
        assert folder == "done", exit_record(work_root, path)["reason"]


class PrivateEngine:
    """A second dockerd, without live-restore, on its own bridge (a dockerd without one
    would take the main Engine's docker0) and its own data root, which keeps the loaded
    test image between runs. Stopped with SIGTERM as systemd would: containers die."""

    def __init__(self, base: Path) -> None:
        self.base = base
        # Short: containerd's socket lives here, and unix socket paths stop at 108 bytes.
        # Fixed, like the data root: one private Engine at a time, and a stale one (its
        # test killed before tearing it down) is found and ended.
        self.run_dir = Path("/run/watcherd-test-engine")
        self.url = f"unix://{self.run_dir / 'docker.sock'}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._end_stale()
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=False,
                       capture_output=True)  # fmt: skip
        subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
        self.base.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", "/var/lib/watcherd-test-engine", "--exec-root",
             str(self.run_dir), "--pidfile", str(self.run_dir / "dockerd.pid"),
             "-H", self.url, f"--bridge={BRIDGE}", "--iptables=false", "--ip6tables=false"],
            stdout=subprocess.DEVNULL, stderr=(self.base / "dockerd.log").open("ab"),
            start_new_session=True,
        )  # fmt: skip
        wait_for(lambda: _answers(self.url), 60, "the private Engine")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)

    def _end_stale(self) -> None:
        pidfile = self.run_dir / "dockerd.pid"
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            return
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 60, "a stale private Engine to end")

    def close(self) -> None:
        self.stop()
        subprocess.run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)


BRIDGE = "wdtest0"


def _answers(url: str) -> bool:
    try:
        return bool(docker.DockerClient(base_url=url).ping())
    except docker.errors.DockerException:
        return False


@pytest.fixture
def private_engine(tmp_path: Path, behave: str) -> Any:
    engine = PrivateEngine(tmp_path / "engine")
    engine.start()
    client = docker.DockerClient(base_url=engine.url)
    try:
        client.images.get(behave)
    except docker.errors.ImageNotFound:  # from the main Engine, once (the data root stays)
        image = docker.from_env().images.get(behave)
        client.images.load(b"".join(image.save(named=True)))
    yield engine
    for container in client.containers.list(ignore_removed=True, all=True):
        with contextlib.suppress(docker.errors.APIError):  # the daemon may be removing it
            container.remove(force=True)
    engine.close()


def test_an_engine_stopped_mid_batch_fails_no_job_and_ends_none_twice(
    work_root: Path, start_daemon: StartDaemon, repo_url: str, private_engine: PrivateEngine
) -> None:
    daemon = start_daemon(docker_host=private_engine.url, concurrency=2)
    names = [f"batch{i}.yaml" for i in range(6)]
    for name in names:
        write_job(work_root / "inbox", name, repo_url=repo_url, prompt="sleep 3")
    wait_for(lambda: len(finished_jobs(work_root)["running"]) == 2, 30, "two jobs running")
    time.sleep(1)  # well inside their three seconds
    private_engine.stop()  # without live-restore: its containers are killed
    time.sleep(15)
    private_engine.start()
    for name in names:
        folder, path = wait_finished(work_root, name, timeout=120)
        assert folder == "done", exit_record(work_root, path)["reason"]
    jobs = finished_jobs(work_root)
    assert len(jobs["done"]) == len(names) and jobs["failed"] == []  # none ended twice
    retried = [
        n for n in jobs["done"] if exit_record(work_root, work_root / "done" / n)["attempts"] == 2
    ]
    assert retried  # the killed ones ran again
    assert "without live-restore" in daemon.log()
