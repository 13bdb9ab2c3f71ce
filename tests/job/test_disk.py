"""job/disk.py without Docker: a job's filesystem bound where its places are, over its
budget when full, its out/ moved onto the root, everything released (no mount, no loop
device, no image), made again where a crash or a reboot left it half done; and the probe
that decides whether it can be used at all. Needs root and loop devices."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.util.test_loopfs import attached_to, needs_loop
from watcherd.job.disk import SLACK, JobDisks
from watcherd.util import loopfs

pytestmark = needs_loop
MiB = 1024**2
JOB = "20261207T000000Z-job-abcdef"


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[JobDisks]:
    root = tmp_path / "work"
    (root / "out").mkdir(parents=True)
    yield JobDisks(root)
    for mount in loopfs.mounts_below(tmp_path):
        loopfs.unmount(mount.target)


def nothing_left(disks: JobDisks, job_id: str = JOB) -> None:
    assert loopfs.mounts_below(disks.root) == []
    assert attached_to(disks.image(job_id)) == []
    assert not disks.image(job_id).exists() and not disks.mount_point(job_id).exists()
    assert not disks.place(job_id, "workspace").exists()
    assert not disks.place(job_id, "home").exists()


def test_its_places_are_its_filesystem_and_it_is_over_once_full(disks: JobDisks) -> None:
    disk = disks.create(JOB, 32 * MiB)
    places = {name: disks.place(JOB, name) for name in ("workspace", "out", "home")}
    assert all(os.path.ismount(place) for place in places.values())
    assert disks.get(JOB) == disk and not disk.over()
    (places["home"] / "a").write_bytes(b"x" * 10 * MiB)
    (places["workspace"] / "b").write_bytes(b"x" * 10 * MiB)
    assert not disk.over()
    with pytest.raises(OSError) as failed, (places["out"] / "c").open("wb") as handle:
        while True:
            handle.write(b"x" * MiB)
    assert failed.value.errno == errno.ENOSPC
    assert disk.over() and 32 * MiB < disk.used() <= 32 * MiB + 4 * MiB
    assert os.stat(disks.image(JOB)).st_blocks * 512 <= os.stat(disks.image(JOB)).st_size


def test_a_job_at_its_budget_is_not_over_it(disks: JobDisks) -> None:
    disk = disks.create(JOB, 16 * MiB)
    (disks.place(JOB, "out") / "all").write_bytes(b"x" * (16 * MiB - 256 * 1024))
    os.sync()
    assert not disk.over(), disk.used()
    (disks.place(JOB, "out") / "more").write_bytes(b"x" * (SLACK // 2 + 256 * 1024))
    assert disk.over()


def test_out_moves_onto_the_root_and_everything_is_released(disks: JobDisks) -> None:
    disks.create(JOB, 32 * MiB)
    out, home = disks.place(JOB, "out"), disks.place(JOB, "home")
    os.chown(out, 1000, 1000)
    (out / "run.log").write_text("log")
    os.chown(out / "run.log", 1000, 1000)
    os.symlink("/etc/shadow", out / "shadow")
    (home / "sessions").mkdir()
    removed = disks.settle_out(JOB)
    assert removed == ["shadow (symlink)"]
    assert not os.path.ismount(out) and (out / "run.log").read_text() == "log"
    assert (out.stat().st_uid, (out / "run.log").stat().st_uid) == (1000, 1000)
    assert disks.settle_out(JOB) == []  # done already
    disks.drop_home(JOB)
    assert not os.path.ismount(home)
    assert os.path.ismount(disks.place(JOB, "workspace"))  # kept until it is pruned
    disks.release(JOB)
    nothing_left(disks)
    assert (out / "run.log").read_text() == "log"  # results outlive the filesystem


def test_a_copy_cut_short_by_a_crash_is_made_again(disks: JobDisks) -> None:
    disks.create(JOB, 16 * MiB)
    out = disks.place(JOB, "out")
    (out / "events.jsonl").write_text("{}\n")
    loopfs.unmount(out)  # a crash between the unbind and the end of the copy
    (out / "half").write_text("")
    disks.settle_out(JOB)
    assert sorted(p.name for p in out.iterdir()) == ["events.jsonl"]


def test_a_new_attempt_starts_on_a_fresh_filesystem(disks: JobDisks) -> None:
    disks.create(JOB, 16 * MiB)
    (disks.place(JOB, "workspace") / "old").write_text("")
    first = attached_to(disks.image(JOB))
    disks.create(JOB, 16 * MiB)
    assert list(disks.place(JOB, "workspace").iterdir()) == []
    assert attached_to(disks.image(JOB)) != first or len(first) == 1
    assert len(loopfs.mounts_below(disks.root)) == 4  # the filesystem and three binds
    disks.release(JOB)
    nothing_left(disks)


def test_after_a_reboot_a_kept_workspace_is_mounted_again(disks: JobDisks) -> None:
    disks.create(JOB, 16 * MiB)
    (disks.place(JOB, "workspace") / "file").write_text("kept")
    disks.settle_out(JOB)
    disks.drop_home(JOB)
    for mount in loopfs.mounts_below(disks.root):  # what a reboot does
        loopfs.unmount(mount.target)
    assert not (disks.place(JOB, "workspace") / "file").exists()
    disks.recover(running=set())
    assert (disks.place(JOB, "workspace") / "file").read_text() == "kept"
    assert not os.path.ismount(disks.place(JOB, "out"))  # settled: it stays on the root
    disks.prune(keep=set())
    nothing_left(disks)


def test_start_up_releases_what_a_crash_left_half_made(disks: JobDisks) -> None:
    disks.folder.mkdir(mode=0o700)
    disks.image(JOB).write_bytes(b"not a filesystem")  # killed during mke2fs
    other = "20261207T000000Z-other-123456"
    disks.mount_point(other).mkdir()  # killed after its image was deleted
    probe = disks.folder / ".probe-0a1b2c3d"
    probe.mkdir()
    os.utime(probe, (time.time() - 3600, time.time() - 3600))  # a crashed start-up's
    disks.recover(running=set())
    assert list(disks.folder.iterdir()) == []
    nothing_left(disks)


def test_start_up_leaves_a_running_jobs_filesystem_to_its_job(disks: JobDisks) -> None:
    disks.create(JOB, 16 * MiB)
    for mount in loopfs.mounts_below(disks.root):
        loopfs.unmount(mount.target)
    disks.recover(running={JOB})
    assert disks.get(JOB) is None
    disk = disks.remount(JOB)  # at its adoption
    assert disk is not None and disk.budget == 16 * MiB
    assert all(os.path.ismount(disks.place(JOB, n)) for n in ("workspace", "out", "home"))


def test_the_probe_says_why_the_engine_cannot_see_the_mounts(disks: JobDisks) -> None:
    assert disks.probe(lambda folder, name: (folder / name).read_bytes()) == ""
    assert "does not see what the daemon mounts" in disks.probe(lambda folder, name: None)

    def down(folder: Path, name: str) -> bytes | None:
        raise ConnectionError("refused")

    assert "could not be asked" in disks.probe(down)
    assert loopfs.mounts_below(disks.root) == []
    assert list(disks.folder.iterdir()) == []
