"""The disk budget held by the kernel (job/disk.py), through the real daemon and Docker,
with the stand-in image's scripted agent (``sh COMMAND``), on both backends: a job that
writes as fast as it can into every place it can write gets no further than its budget;
the root is back as it was once the job is pruned; a daemon killed mid-job leaves no
mount or loop device behind; and where the daemon's mounts would not be seen, the budget
is polled, and said so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.backends import on_both_backends
from tests.support.git_server import make_repo
from tests.support.helpers import (
    DaemonProcess,
    StartDaemon,
    exit_record,
    wait_finished,
    wait_for,
    write_job,
)
from tests.util.test_loopfs import attached_to, needs_loop
from watcherd.job.disk import SLACK
from watcherd.util import loopfs

pytestmark = [pytest.mark.docker, needs_loop]
MiB = 1024**2
BUDGET = 64 * MiB
# What the root may grow by beyond the budget: the job's image is the budget plus ext4's
# own (journal, inode tables, what it keeps back: 15 MiB at 64 MiB), and never more than
# its size; beside it the daemon's own files for the job (its cache, state, records).
OVERHEAD = loopfs.image_bytes(BUDGET + SLACK) - BUDGET
DAEMON_FILES = 2 * MiB
# Into each place the job can write, at once, as fast as it can: its workspace, out/, agent
# home on its filesystem; /tmp and $HOME, tmpfs (RAM, not the root's disk), capped here.
FILL_EVERYTHING = (
    'sh for place in "/work/$REPO_DIR" /work/out "$CODEX_HOME"; do '
    '(dd if=/dev/zero of="$place/fill" bs=1M 2>/dev/null; '
    'fallocate -l 1G "$place/fallocated" 2>/dev/null; '
    'for n in $(seq 100000); do : > "$place/empty-$n" || break; done) & done; '
    'for place in /tmp "$HOME"; do head -c 128m /dev/zero > "$place/fill" 2>/dev/null & done; '
    "wait; "
)


def root_usage(root: Path) -> int:
    """Bytes the work root holds on its own filesystem (a job's filesystem's image counts,
    what is mounted below the root does not: it is in that image)."""
    device, total, stack = os.stat(root).st_dev, 0, [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev != device:
                continue
            total += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
    return total


class Peak:
    """The most the root held, sampled until stopped."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.most = root_usage(root)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.most = max(self.most, root_usage(self.root))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        return self.most


def nothing_mounted_or_attached(root: Path) -> bool:
    images = list((root / "disks").glob("*.img")) if (root / "disks").is_dir() else []
    backing = (
        loopfs.backing_file(f"/dev/{block.name}") for block in Path("/sys/block").glob("loop*")
    )
    attached = [path for path in backing if path and path.startswith(str(root))]
    return not loopfs.mounts_below(root) and not images and not attached


@pytest.fixture
def filled_repo(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A repository whose checkout (20 MiB) is more than a 16 MiB budget."""
    path = make_repo(tmp_path_factory.mktemp("big") / "big.git")
    work = path.with_suffix(".work")
    (work / "blob.bin").write_bytes(os.urandom(20 * MiB))
    for args in (["add", "."], ["commit", "-qm", "big"], ["push", "-q", str(path), "main"]):
        subprocess.run(["git", *args], cwd=work, check=True, capture_output=True)
    return f"file://{path}"


@on_both_backends
@pytest.mark.parametrize("then", ["sleep 120", "exit 0"])
def test_a_job_writing_everywhere_as_fast_as_it_can_stops_at_its_budget(
    work_root: Path, start_daemon: StartDaemon, repo_url: str, then: str
) -> None:
    """Killed while it runs (the daemon sees its filesystem full within a second) or gone
    by itself (seen at its exit): either way the root never held more than its image."""
    start_daemon(keep_workspaces=0)
    before = root_usage(work_root)
    peak = Peak(work_root)
    write_job(work_root / "inbox", "fill.yaml", repo_url=repo_url, repo_dir="widgets",
              prompt=FILL_EVERYTHING + then, disk="64m", retries=0)  # fmt: skip
    folder, path = wait_finished(work_root, "fill.yaml", timeout=180)
    most = peak.stop()
    record = exit_record(work_root, path)
    assert (folder, record["state"]) == ("failed", "failed"), record["reason"]
    assert record["reason"].startswith("disk budget exceeded: ")
    assert "its filesystem is full: writes past it failed with ENOSPC" in record["reason"]
    assert record["disk"]["bound"] == "filesystem"
    assert record["disk"]["budget"] == BUDGET < record["disk"]["used"] <= BUDGET + 4 * MiB
    grew = most - before
    print(f"\nthe root grew by at most {grew / MiB:.1f} MiB for a {BUDGET // MiB} MiB budget "
          f"(bound: {(BUDGET + OVERHEAD) / MiB:.0f} MiB)")  # fmt: skip
    assert grew <= BUDGET + OVERHEAD + DAEMON_FILES, grew / MiB
    # Pruned (keep_workspaces: 0): the room is back, nothing mounted, no loop device.
    wait_for(lambda: nothing_mounted_or_attached(work_root), 30, "its filesystem released")
    assert root_usage(work_root) - before <= DAEMON_FILES
    out = work_root / "out" / path.stem
    assert sorted(p.name for p in out.iterdir()) <= ["exit.json", "run.log"]  # nothing else
    assert not (work_root / "workspaces" / path.stem).exists()


@on_both_backends
def test_a_daemon_killed_mid_job_adopts_it_with_its_filesystem_and_leaves_nothing_behind(
    work_root: Path, start_daemon: StartDaemon, repo_url: str,
    docker_client: docker.DockerClient,
) -> None:  # fmt: skip
    """kill -9 while the job runs: its mounts stay (the kernel's, not the daemon's); the
    next start adopts the job, which then writes past its budget and is stopped for it;
    once pruned, no mount and no loop device of it is left."""
    daemon = start_daemon(keep_workspaces=0)
    write_job(work_root / "inbox", "adopt.yaml", repo_url=repo_url, repo_dir="widgets",
              prompt="sh echo started > /work/out/started; sleep 6; "
                     "dd if=/dev/zero of=/work/out/big bs=1M; sleep 120",
              disk="64m", retries=0)  # fmt: skip
    started = wait_for(lambda: list((work_root / "out").glob("*/started")), 60, "job running")
    job_id = started[0].parent.name
    daemon.kill()
    mounts = {m.target for m in loopfs.mounts_below(work_root)}
    assert {work_root / "disks" / job_id, work_root / "out" / job_id} <= mounts
    restarted = start_daemon(keep_workspaces=0)
    folder, path = wait_finished(work_root, "adopt.yaml", timeout=120)
    record = exit_record(work_root, path)
    assert "adopting its container" in restarted.log()
    assert (folder, record["attempts"]) == ("failed", 1)
    assert record["reason"].startswith("disk budget exceeded: ")
    assert (work_root / "out" / job_id / "exit.json").is_file()
    wait_for(lambda: nothing_mounted_or_attached(work_root), 30, "its filesystem released")
    assert attached_to(work_root / "disks" / f"{job_id}.img") == []


@on_both_backends
def test_a_job_that_finishes_while_the_daemon_is_down_is_collected_from_its_filesystem(
    work_root: Path, start_daemon: StartDaemon, repo_url: str
) -> None:
    daemon = start_daemon(keep_workspaces=0)
    write_job(work_root / "inbox", "late.yaml", repo_url=repo_url, repo_dir="widgets",
              prompt="sh echo started > /work/out/started; sleep 3; "
                     "head -c 8m /dev/zero > /work/out/data",
              disk="64m", retries=0)  # fmt: skip
    started = wait_for(lambda: list((work_root / "out").glob("*/started")), 60, "job running")
    daemon.kill()
    out = started[0].parent
    wait_for(lambda: (out / "data").is_file() and (out / "data").stat().st_size == 8 * MiB,
             60, "the job done while the daemon is down")  # fmt: skip
    start_daemon(keep_workspaces=0)
    folder, path = wait_finished(work_root, "late.yaml", timeout=120)
    record = exit_record(work_root, path)
    assert (folder, record["state"]) == ("done", "done"), record["reason"]
    assert not os.path.ismount(out) and (out / "data").stat().st_size == 8 * MiB
    wait_for(lambda: nothing_mounted_or_attached(work_root), 30, "its filesystem released")


def test_a_checkout_larger_than_the_budget_fails_the_job_rather_than_waiting_for_room(
    work_root: Path, start_daemon: StartDaemon, filled_repo: str
) -> None:
    """ENOSPC from the job's own filesystem is its budget, not a full host disk (which
    the daemon would wait out)."""
    start_daemon(keep_workspaces=0)
    write_job(work_root / "inbox", "big.yaml", repo_url=filled_repo, prompt="succeed",
              disk="16m", retries=0)  # fmt: skip
    folder, path = wait_finished(work_root, "big.yaml", timeout=60)
    record = exit_record(work_root, path)
    assert folder == "failed"
    assert record["reason"].startswith("disk budget exceeded: what the job starts with does "
                                       "not fit in 16777216 bytes")  # fmt: skip
    wait_for(lambda: nothing_mounted_or_attached(work_root), 30, "its filesystem released")


@pytest.fixture
def private_daemon(work_root: Path, daemon_config: dict[str, Any]) -> Iterator[DaemonProcess]:
    """A daemon in a mount namespace of its own (as under systemd's sandbox, or in a
    container): what it mounts, dockerd does not see."""
    daemon = DaemonProcess(work_root, {**daemon_config, "keep_workspaces": 0},
                           prefix=("unshare", "-m", "--propagation", "private"))  # fmt: skip
    yield daemon
    daemon.stop()


def test_a_daemon_whose_mounts_the_engine_cannot_see_polls_and_says_so(
    work_root: Path, private_daemon: DaemonProcess, repo_url: str
) -> None:
    private_daemon.start()
    assert "disk budgets are polled, not held: the Docker Engine does not see" in (
        private_daemon.log()
    )
    write_job(work_root / "inbox", "polled.yaml", repo_url=repo_url, prompt="succeed")
    folder, path = wait_finished(work_root, "polled.yaml")
    record = exit_record(work_root, path)
    assert folder == "done", record["reason"]
    assert record["disk"]["bound"] == "poll"
    assert "does not see what the daemon mounts" in record["disk"]["why"]
    doctor = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-m", "watcherd",
         "--config", str(private_daemon.config_path), "doctor"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    line = next(x for x in doctor.stdout.splitlines() if "disk bound" in x)
    assert line.startswith("WARN") and "polled: the Docker Engine does not see" in line
    assert "systemd/disk-bound.conf" in line


def test_doctor_says_the_budget_is_held_here(work_root: Path, start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    doctor = subprocess.run(
        [sys.executable, "-m", "watcherd", "--config", str(daemon.config_path), "doctor"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    line = next(x for x in doctor.stdout.splitlines() if "disk bound" in x)
    assert line.startswith("ok") and "no job can write past it" in line, line
    assert json.dumps(loopfs.mounts_below(work_root), default=str) == "[]"
