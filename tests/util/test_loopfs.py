"""util/loopfs.py on this machine's kernel: an image's filesystem leaves its files at least
what was asked, holds writes at its size, gives deleted files' room back to the host, and
its loop device never outlives its last user. Needs root and loop devices (skipped
without: CI has both)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import wait_for
from watcherd.util import loopfs
from watcherd.util.fsutil import copy_tree

needs_loop = pytest.mark.skipif(
    bool(loopfs.problem()), reason=f"no loop filesystems here: {loopfs.problem()}"
)
MiB = 1024**2


def attached_to(image: Path) -> list[str]:
    """The loop devices whose backing file is ``image``."""
    found = []
    for block in Path("/sys/block").glob("loop*"):
        backing = loopfs.backing_file(f"/dev/{block.name}")
        if backing and backing.removesuffix(" (deleted)") == str(image):
            found.append(block.name)
    return found


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    image, mount = tmp_path / "job.img", tmp_path / "job"
    mount.mkdir()
    yield image, mount
    for entry in loopfs.mounts_below(tmp_path):
        loopfs.unmount(entry.target)


def make(image: Path, mount: Path, usable: int) -> None:
    loopfs.make_image(image, loopfs.image_bytes(usable), usable)
    device, fd = loopfs.attach(image)
    try:
        loopfs.mount(device, mount)
    finally:
        os.close(fd)


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@needs_loop
@pytest.mark.parametrize("usable", [17 * MiB, 65 * MiB, 300 * MiB, 1025 * MiB, 5 * 1024 * MiB])
def test_the_image_leaves_at_least_what_was_asked_and_costs_little_on_the_host(
    mounted: tuple[Path, Path], usable: int
) -> None:
    image, mount = mounted
    make(image, mount, usable)
    free = loopfs.usage(mount).free
    assert usable <= free <= usable + 4 * MiB
    assert loopfs.usage(mount).free_inodes >= usable // loopfs.BYTES_PER_INODE
    assert allocated(image) < 2 * MiB  # made lazily: a sparse file
    assert os.stat(image).st_size == loopfs.image_bytes(usable)


@needs_loop
def test_writes_stop_at_its_size_and_deleting_gives_the_room_back(
    mounted: tuple[Path, Path],
) -> None:
    image, mount = mounted
    make(image, mount, 33 * MiB)
    done = subprocess.run(
        ["dd", "if=/dev/zero", f"of={mount}/big", "bs=1M"], capture_output=True, text=True
    )
    assert done.returncode != 0 and "No space left on device" in done.stderr
    os.sync()
    assert allocated(image) <= os.stat(image).st_size
    assert loopfs.usage(mount).free < MiB
    os.unlink(mount / "big")
    os.sync()
    # discard punches the file's blocks out of the image again (after the journal's commit)
    wait_for(lambda: allocated(image) < 8 * MiB, 10, "the room given back to the host")


@needs_loop
def test_its_loop_device_goes_with_its_last_unmount(mounted: tuple[Path, Path]) -> None:
    image, mount = mounted
    make(image, mount, 17 * MiB)
    assert len(attached_to(image)) == 1
    assert [m.target for m in loopfs.mounts_below(mount)] == [mount]
    assert loopfs.unmount(mount)
    assert not loopfs.unmount(mount)  # nothing there any more: no error
    assert attached_to(image) == []


@needs_loop
def test_a_process_killed_before_it_mounted_leaves_no_loop_device(tmp_path: Path) -> None:
    image = tmp_path / "job.img"
    loopfs.make_image(image, loopfs.image_bytes(17 * MiB), 17 * MiB)
    attach_and_die = (
        "import os, sys; from pathlib import Path; from watcherd.util import loopfs; "
        f"device, fd = loopfs.attach(Path({str(image)!r})); print(device, flush=True); "
        "os.kill(os.getpid(), 9)"
    )
    done = subprocess.run(
        [sys.executable, "-c", attach_and_die], capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    assert done.stdout.startswith("/dev/loop"), done.stderr
    assert attached_to(image) == []


def test_mountinfo_escapes_are_read() -> None:
    assert loopfs._unescape(r"/work/a\040b\011c\134d") == "/work/a b\tc\\d"


@needs_loop
def test_a_copy_onto_another_filesystem_keeps_holes_and_follows_nothing(
    mounted: tuple[Path, Path], tmp_path: Path
) -> None:
    image, mount = mounted
    make(image, mount, 65 * MiB)
    source = mount / "out"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "a.txt").write_text("a")
    os.chmod(source / "sub", 0o500)
    with (source / "sparse").open("wb") as handle:  # 1 TiB apparent, one block written
        handle.seek(1024**4 - 1)
        handle.write(b"x")
    os.symlink("/etc/passwd", source / "link")
    os.mkfifo(source / "fifo")
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(source / "sock"))
    target = tmp_path / "copied"
    skipped = copy_tree(source, target)
    listening.close()
    assert skipped == ["sock"]
    assert os.readlink(target / "link") == "/etc/passwd"  # a link still, for make_safe
    assert stat.S_ISFIFO(os.lstat(target / "fifo").st_mode)
    assert (target / "sub" / "a.txt").read_text() == "a"
    assert os.stat(target / "sub").st_mode & 0o777 == 0o500
    assert os.stat(target / "sparse").st_size == 1024**4
    assert allocated(target / "sparse") <= 64 * 1024
    os.chmod(target / "sub", 0o700)
