"""A job's disk budget, held by the kernel: a filesystem of the budget's size, per job.

    disks/<id>.img     the job's filesystem: a sparse image, ext4 (watcherd/util/loopfs.py),
                       as big as the budget plus ext4's own metadata
    disks/<id>/        where it is mounted; the daemon's alone (disks/ is 0700). Its folders
                       are bound where the job and the user expect them:
        workspace/ ->  workspaces/<id>/   until the workspace is pruned
        out/       ->  out/<id>/          while the job runs; then copied onto the root
        home/      ->  homes/<id>/        while the job runs
        .watcherd.json   the budget, and what the files could use when it was made

A write past the budget fails with ENOSPC in the job, whatever its speed: the image cannot
grow. The job's /tmp and $HOME are tmpfs already (RAM, charged to its memory limit).

Its life: ``create`` before the workspace is made (after releasing whatever an earlier
attempt left); the job runs; ``settle_out`` once its container has exited (out/<id>/ is
copied onto the root's disk and unbound: results outlive the filesystem); ``drop_home``
when the job is filed; ``release`` when its workspace is pruned (or at once when the job
went over its budget): unmounted, the loop device frees itself (autoclear), the image is
deleted. Every step can be done again after a crash. A daemon killed mid-job leaves the
mounts in place (the kernel's, not the process's): the next start adopts the job with them.
After a reboot the images are mounted again, ext4's journal making them whole (``recover``
for finished jobs' kept workspaces, ``remount`` at a running job's adoption).

Why this and not another bound the kernel keeps: project quotas need the root's own
filesystem made with them (ext4's ``project`` feature and ``prjquota``, XFS's
``pquota``): not the default, and not something to change under a running host; a
tmpfs per job would hold its files in RAM. An image file needs nothing of the root's
filesystem but room, and costs a few milliseconds (mke2fs of an empty, lazily made ext4).

Where the filesystem cannot be made (not root, no loop devices, no mke2fs, a daemon in a
mount namespace of its own that the Engine does not see), the budget is polled as before
(watcherd/job/diskuse.py): ``probe`` says why, at start-up and in ``doctor``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watcherd.job.outputs import make_safe
from watcherd.util import loopfs
from watcherd.util.fsutil import copy_tree, remove_tree, write_atomic

log = logging.getLogger("watcherd.disk")

SLACK = 1024**2  # the filesystem holds this much past the budget: the verdict is the daemon's
META = ".watcherd.json"
# The folders of a job's filesystem, the modes they are made with, and where they are bound.
PLACES = {"workspace": ("workspaces", 0o700), "out": ("out", 0o755), "home": ("homes", 0o700)}
PARENT_MODES = {"workspaces": 0o755, "homes": 0o700, "out": 0o755}
PROBE_BUDGET = 16 * 1024**2
PROBE_LEFTOVER_SECONDS = 60.0  # a probe lasts well under a second

# How the budget of a job was held, in its record (exit.json's disk.bound).
FILESYSTEM = "filesystem"
POLL = "poll"

EngineReads = Callable[[Path, str], "bytes | None"]


@dataclass(frozen=True)
class Disk:
    """A job's mounted filesystem."""

    job_id: str
    mount: Path
    budget: int
    usable: int  # what its files could use when it was made: the budget and a bit more

    def used(self) -> int:
        """Bytes its files use now (blocks, metadata of its own included)."""
        return max(0, self.usable - loopfs.usage(self.mount).free)

    def over(self) -> bool:
        """Past its budget: more than the budget used, or every inode taken. A write that
        failed with ENOSPC left it so (the filesystem holds only SLACK more)."""
        now = loopfs.usage(self.mount)
        return now.free < self.usable - self.budget or now.free_inodes == 0


class JobDisks:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / "disks"
        self.enabled = False  # set by the start-up's probe (Server.startup)
        self.why_not = "not probed yet"

    def image(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.img"

    def mount_point(self, job_id: str) -> Path:
        return self.folder / job_id

    def place(self, job_id: str, name: str) -> Path:
        return self.root / PLACES[name][0] / job_id

    def has(self, job_id: str) -> bool:
        """Whether the job has (or a crash left) a filesystem: its mount point exists."""
        return os.path.lexists(self.mount_point(job_id)) or self.image(job_id).exists()

    # -- making ------------------------------------------------------------------------

    def create(self, job_id: str, budget: int) -> Disk:
        """A fresh filesystem for ``budget`` bytes, its folders bound (empty, root's: the
        callers make them the job's) in place of whatever an earlier attempt left."""
        if self.has(job_id):
            self.release(job_id)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        image, mount = self.image(job_id), self.mount_point(job_id)
        usable = budget + SLACK
        try:
            loopfs.make_image(image, loopfs.image_bytes(usable), usable)
            self._mount(image, mount)
            for name, (_folder, mode) in PLACES.items():
                (mount / name).mkdir(mode=mode)
            free = loopfs.usage(mount).free
            # Not synced: ext4 commits it within seconds; a reboot before that leaves the
            # filesystem "half made" for recover(), as one that crashed while being made.
            (mount / META).write_text(json.dumps({"budget": budget, "usable": free}))
            for name in PLACES:
                self._bind(job_id, name, fresh=True)
        except BaseException:
            with contextlib.suppress(OSError):
                self.release(job_id)
            raise
        return Disk(job_id, mount, budget, free)

    def _mount(self, image: Path, mount: Path) -> None:
        mount.mkdir(mode=0o700, exist_ok=True)
        device, fd = loopfs.attach(image)
        try:
            loopfs.mount(device, mount)
        finally:
            os.close(fd)  # from now on the mount holds the device; autoclear frees it after

    def _bind(self, job_id: str, name: str, fresh: bool) -> None:
        target = self.place(job_id, name)
        parent = target.parent
        if not parent.is_dir():
            parent.mkdir(mode=PARENT_MODES[parent.name], parents=True, exist_ok=True)
        if fresh:
            _unmount(target)
            remove_tree(target)  # what an earlier attempt left there, on the root
        if not target.is_dir():
            target.mkdir(mode=0o700)
        loopfs.bind(self.mount_point(job_id) / name, target)

    # -- finding -----------------------------------------------------------------------

    def get(self, job_id: str) -> Disk | None:
        """The job's filesystem, if it is mounted."""
        mount = self.mount_point(job_id)
        if not os.path.ismount(mount):
            return None
        try:
            meta = json.loads((mount / META).read_text())
            return Disk(job_id, mount, int(meta["budget"]), int(meta["usable"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def recover(self, running: set[str]) -> None:
        """At start-up, for finished jobs (a running job's is its owner's: ``remount`` at
        its adoption): each image mounted again where a reboot unmounted it, its
        workspace bound; what cannot be, or was half made, is released; probes' leftovers
        go. Pruning then releases those whose workspaces are not kept."""
        if not self.folder.is_dir():
            return
        images = {p.name.removesuffix(".img") for p in self.folder.glob("*.img")}
        for path in sorted(self.folder.iterdir()):
            job_id = path.name.removesuffix(".img")
            if path.name.startswith(".probe-"):
                if time.time() - path.lstat().st_mtime > PROBE_LEFTOVER_SECONDS:
                    self._drop_probe(path)  # a crashed start-up's (not another daemon's)
            elif job_id in running or path.name.startswith("."):
                continue
            elif job_id not in images:
                self.release(job_id)  # a mount point left without its image
            elif path.name.endswith(".img"):
                self._remount_or_release(job_id)

    def remount(self, job_id: str) -> Disk | None:
        """The job's filesystem, mounted again if a reboot unmounted it (ext4's journal
        makes it whole), its folders bound again; None if it has none, or it cannot be."""
        if not self.image(job_id).is_file():
            return None
        self._remount_or_release(job_id)
        return self.get(job_id)

    def _remount_or_release(self, job_id: str) -> None:
        try:
            with self._image_lock(job_id):
                self._remount(job_id)
        except OSError as exc:
            log.warning("job %s: its filesystem cannot be mounted again (%s); released",
                        job_id, exc)  # fmt: skip
            self.release(job_id)

    def _remount(self, job_id: str) -> None:
        mount = self.mount_point(job_id)
        if not os.path.ismount(mount):
            self._mount(self.image(job_id), mount)
            log.info("job %s: its filesystem is mounted again", job_id)
        if not (mount / META).is_file():
            raise loopfs.LoopError(errno.EIO, "half made: no record of its budget")
        for name in PLACES:
            if (mount / name).is_dir() and not os.path.ismount(self.place(job_id, name)):
                self._bind(job_id, name, fresh=False)

    @contextlib.contextmanager
    def _image_lock(self, job_id: str) -> Iterator[None]:
        """Held while an image is mounted or released outside its job's life (start-up,
        pruning): two daemons on one root never attach one image twice."""
        try:
            fd = os.open(self.image(job_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- ending ------------------------------------------------------------------------

    def settle_out(self, job_id: str) -> list[str]:
        """out/<id>/ onto the root's disk, where results stay: made safe on the job's
        filesystem (what went is returned, as make_safe says it), copied, unbound, and
        removed from the filesystem (which marks it done). Nothing to do for a job
        without a filesystem, or done already; a crash midway: done again."""
        mount = self.mount_point(job_id)
        source = mount / "out"
        if not os.path.ismount(mount) or not source.is_dir():
            return []
        removed = make_safe(source)
        target = self.place(job_id, "out")
        _unmount(target)
        remove_tree(target)  # a copy a crash cut short
        skipped = copy_tree(source, target)  # sockets: make_safe left nothing else
        remove_tree(source)
        return removed + [f"{name} (socket)" for name in skipped]

    def drop_home(self, job_id: str) -> None:
        """The agent home's bind gone, and its files from the filesystem (the room back)."""
        mount = self.mount_point(job_id)
        _unmount(self.place(job_id, "home"))
        if os.path.ismount(mount):
            remove_tree(mount / "home")

    def release(self, job_id: str) -> None:
        """Unmount it all (the loop device frees itself), delete the image; the empty
        workspace and home folders go too. out/<id>/ on the root is never touched."""
        with self._image_lock(job_id):
            for name in PLACES:
                _unmount(self.place(job_id, name))
            _unmount(self.mount_point(job_id))
            self.image(job_id).unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(self.mount_point(job_id))
        for name in ("workspace", "home"):
            target = self.place(job_id, name)
            if not os.path.ismount(target):
                remove_tree(target)

    def prune(self, keep: set[str] | Callable[[], set[str]]) -> None:
        """Release every filesystem whose job is not in ``keep`` (running, or with a
        workspace still kept), asked once the filesystems are listed: one made since for a
        job claimed meanwhile is not listed, one listed is its running job's."""
        if not self.folder.is_dir():
            return
        listed = list(self.folder.iterdir())
        kept = keep() if callable(keep) else keep
        for path in listed:
            job_id = path.name.removesuffix(".img")
            if not path.name.startswith(".") and job_id not in kept:
                log.debug("releasing the filesystem of job %s", job_id)
                self.release(job_id)

    # -- can it be done here ------------------------------------------------------------

    def probe(self, engine_reads: EngineReads) -> str:
        """Why job filesystems cannot be used here, or "" when they can: one is made,
        mounted, and a file in it read back through the Engine (whose bind mounts must see
        what the daemon mounted: not so for a daemon in a mount namespace of its own)."""
        why = loopfs.problem()
        if why:
            return why
        name = f".probe-{secrets.token_hex(4)}"
        mount = self.folder / name
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            usable = PROBE_BUDGET + SLACK
            loopfs.make_image(Path(f"{mount}.img"), loopfs.image_bytes(usable), usable)
            self._mount(Path(f"{mount}.img"), mount)
            token = secrets.token_hex(16).encode()
            write_atomic(mount / "probe", token)
            try:
                seen = engine_reads(mount, "probe")
            except Exception as exc:  # the Engine's own trouble: said, not raised
                return f"the Docker Engine could not be asked to look ({str(exc)[:200]})"
            if seen != token:
                return ("the Docker Engine does not see what the daemon mounts (the daemon "
                        "runs in a mount namespace of its own: a systemd sandbox, a "
                        "container; or the Engine is on another host)")  # fmt: skip
            return ""
        except OSError as exc:
            return f"a job filesystem cannot be made here: {exc}"
        finally:
            self._drop_probe(mount)

    def _drop_probe(self, path: Path) -> None:
        mount = Path(str(path).removesuffix(".img"))
        with contextlib.suppress(OSError):
            _unmount(mount)
        Path(f"{mount}.img").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.rmdir(mount)


def _unmount(path: Path) -> None:
    """Unmount ``path`` if something is mounted there (only root can have: a daemon that
    is not never asks the kernel)."""
    if os.path.ismount(path):
        loopfs.unmount(path)
