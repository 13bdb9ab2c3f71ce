"""A filesystem of a fixed size kept in a file: the kernel's bound on what can be written.

A sparse image file, ext4 made in it by ``mke2fs`` (lazy: a few milliseconds and a few
hundred KiB, whatever its size), attached to a loop device that detaches itself when its
last user is gone (autoclear: after its last unmount, or when the process that attached
it dies before mounting it), mounted; bind mounts of its folders elsewhere; the mounts
below a folder, read from /proc/self/mountinfo. Linux only, and root (CAP_SYS_ADMIN, the
loop devices): ``problem()`` says what is missing.

Writes past the filesystem's size fail with ENOSPC inside it; the image file on the host
never holds more than its size (it only ever holds what was written: deleting files in
it punches holes again, through ``discard``).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

LOOP_CONTROL = "/dev/loop-control"
LOOP_SET_FD = 0x4C00
LOOP_SET_STATUS64 = 0x4C04
LOOP_CONFIGURE = 0x4C0A  # Linux 5.8: fd, flags and status in one call
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16  # no second copy of the job's data in the host's page cache
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

BLOCK = 4096
BYTES_PER_INODE = 4096  # one inode per block: a million empty files are not free either
INODE_SIZE = 256
# Of the kernel's own: ext4 keeps 2 % of the blocks, at most 4096, out of reach of
# writers (for its metadata when it is nearly full).
RESERVED_SHARE, RESERVED_MAX = 50, 4096 * BLOCK
GROUP = 32768 * BLOCK  # a block group: its bitmaps and descriptor, a few blocks
FIXED_OVERHEAD = 2 * 1024**2  # superblock, root folder, lost+found, rounding
# What mke2fs is told beside the size: 4 KiB blocks, an inode per block, no room kept for
# root (-m 0) or for growing (^resize_inode), and nothing written that need not be
# (lazy inode tables and journal, no discard of a new sparse file).
MKE2FS_OPTIONS = (
    "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-i", str(BYTES_PER_INODE),
    "-I", str(INODE_SIZE), "-m", "0", "-O", "^resize_inode",
    "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
)  # fmt: skip
# Deleting files gives their blocks back to the host (discard punches holes in the
# image); inode tables are not zeroed behind the job's back (noinit_itable): the image
# holds only what was written.
MOUNT_OPTIONS = "discard,noinit_itable"

_libc = ctypes.CDLL(None, use_errno=True)


class LoopError(OSError):
    """A step of making, attaching or mounting a filesystem failed; ``str()`` says which."""


def journal_bytes(usable: int) -> int:
    """The journal of a filesystem for ``usable`` bytes: enough for a job's metadata,
    small beside its budget (mke2fs's own default grows to 1 GiB)."""
    if usable <= 1024**3:
        return 4 * 1024**2
    if usable <= 16 * 1024**3:
        return 16 * 1024**2
    return 64 * 1024**2


def image_bytes(usable: int) -> int:
    """The size of an image whose filesystem leaves at least ``usable`` bytes to its files:
    ``usable`` plus ext4's own (inode tables 1/16, the journal, the 2 % it keeps back, the
    groups' bitmaps), rounded up to a MiB. It bounds what the image can ever take on the
    host."""
    fixed = usable + journal_bytes(usable) + FIXED_OVERHEAD
    size = fixed
    for _ in range(8):  # converges in two or three rounds
        kept_back = min(size // RESERVED_SHARE, RESERVED_MAX)
        overhead = size * INODE_SIZE // BYTES_PER_INODE + kept_back + size // GROUP * 2 * BLOCK
        size = fixed + overhead
    mib = 1024**2
    return -(-size // mib) * mib


def make_image(path: Path, size: int, usable: int) -> None:
    """A sparse file of ``size`` bytes holding a fresh, empty ext4 (``usable``: what its
    journal is sized for). Replaces whatever was at ``path``."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    journal = journal_bytes(usable) // 1024**2
    command = [_mke2fs(), *MKE2FS_OPTIONS, "-J", f"size={journal}", str(path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LoopError(errno.EIO, f"mke2fs: {exc}") from exc
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split())[-300:]
        code = errno.ENOSPC if "No space left" in said else errno.EIO
        raise LoopError(code, f"mke2fs {path.name}: {said or f'exit {done.returncode}'}")


def _mke2fs() -> str:
    for folder in ("/usr/sbin", "/sbin"):  # not always on a service's PATH
        candidate = Path(folder) / "mke2fs"
        if candidate.is_file():
            return str(candidate)
    return shutil.which("mke2fs") or "mke2fs"


def attach(image: Path) -> tuple[str, int]:
    """A free loop device backed by ``image``, autoclear set in the same call: returns
    the device and an open fd on it, which holds it until the caller has mounted it
    (close it then; a process that dies before that leaves no device behind)."""
    control = _open(LOOP_CONTROL, os.O_RDWR)
    try:
        backing = _open(str(image), os.O_RDWR)
        try:
            for _ in range(64):  # another process may take the free device first
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                device = f"/dev/loop{number}"
                fd = _open(device, os.O_RDWR)
                try:
                    _configure(fd, backing, image)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno == errno.EBUSY:
                        continue
                    raise LoopError(exc.errno or errno.EIO, f"{device}: {exc.strerror}") from exc
                return device, fd
            raise LoopError(errno.EBUSY, "no free loop device after 64 tries")
        finally:
            os.close(backing)
    finally:
        os.close(control)


def _open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError as exc:
        raise LoopError(exc.errno or errno.EIO, f"{path}: {exc.strerror}") from exc


def _info64(flags: int, name: bytes) -> bytes:
    # struct loop_info64: device, inode, rdevice, offset, sizelimit; number, encrypt
    # type, encrypt key size, flags; file name, crypt name, key; init[2].
    return struct.pack("=5Q4I64s64s32s2Q", 0, 0, 0, 0, 0, 0, 0, 0, flags, name[:63], b"", b"", 0, 0)


def _configure(fd: int, backing: int, image: Path) -> None:
    flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO
    config = struct.pack("=2I", backing, 0) + _info64(flags, os.fsencode(image)) + bytes(64)
    try:
        fcntl.ioctl(fd, LOOP_CONFIGURE, config)
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTTY):  # before Linux 5.8
            raise
    fcntl.ioctl(fd, LOOP_SET_FD, backing)
    try:
        fcntl.ioctl(fd, LOOP_SET_STATUS64, _info64(LO_FLAGS_AUTOCLEAR, os.fsencode(image)))
    except OSError:
        fcntl.ioctl(fd, 0x4C01)  # LOOP_CLR_FD: never leave one without autoclear
        raise


def _call(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise LoopError(code, f"{what}: {os.strerror(code)}")


def mount(device: str, target: Path) -> None:
    """``device``'s ext4 at ``target``: no setuid programs, no device files."""
    _call(
        _libc.mount(device.encode(), os.fsencode(target), b"ext4", MS_NOSUID | MS_NODEV,
                    MOUNT_OPTIONS.encode()),
        f"mount {device} on {target}",
    )  # fmt: skip


def bind(source: Path, target: Path) -> None:
    """``source`` (a folder) seen at ``target`` too, nosuid and nodev like its filesystem."""
    _call(_libc.mount(os.fsencode(source), os.fsencode(target), None, MS_BIND, None),
          f"bind {source} on {target}")  # fmt: skip
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV
    _call(_libc.mount(None, os.fsencode(target), None, flags, None), f"remount {target}")


def unmount(target: Path) -> bool:
    """Detach what is mounted at ``target`` at once (files still open in it keep it alive
    until they are closed); False if nothing was."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH | UMOUNT_NOFOLLOW) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more), or no folder
        return False
    raise LoopError(code, f"unmount {target}: {os.strerror(code)}")


@dataclass(frozen=True)
class MountEntry:
    target: Path
    source: str  # the device, /dev/loopN for ours
    fstype: str
    root: str  # the folder of its filesystem seen there: "/" or a bind's folder


def mounts_below(folder: Path) -> list[MountEntry]:
    """Every mount at or below ``folder`` (this process's view), deepest first."""
    prefix = str(folder).rstrip("/") + "/"
    found = []
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index("-")
        except ValueError:
            continue
        target = _unescape(fields[4])
        if target == str(folder) or target.startswith(prefix):
            found.append(
                MountEntry(Path(target), _unescape(fields[separator + 2]),
                           fields[separator + 1], _unescape(fields[3]))
            )  # fmt: skip
    return sorted(found, key=lambda m: len(m.target.parts), reverse=True)


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    if "\\" not in text:
        return text
    out, index = [], 0
    while index < len(text):
        if text[index] == "\\" and text[index + 1 : index + 4].isdigit():
            out.append(chr(int(text[index + 1 : index + 4], 8)))
            index += 4
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def backing_file(device: str) -> str | None:
    """The image a loop device reads, if it is one (the kernel's own record)."""
    name = os.path.basename(device)
    try:
        return Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
    except OSError:
        return None


@dataclass(frozen=True)
class Usage:
    total: int  # bytes its files may use in all (at its making)
    free: int  # bytes its files may still use
    free_inodes: int


def usage(folder: Path) -> Usage:
    st = os.statvfs(folder)
    return Usage(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize, st.f_favail)


def problem() -> str:
    """Why this process cannot make loop filesystems, or "" if nothing is seen missing
    (the real test is making one)."""
    if os.geteuid() != 0:
        return "the daemon is not root (mounting needs it)"
    if not os.path.exists(LOOP_CONTROL):
        return f"no {LOOP_CONTROL} (no loop devices here: a container, or PrivateDevices=)"
    if not Path(_mke2fs()).is_file() and shutil.which("mke2fs") is None:
        return "no mke2fs (apt-get install e2fsprogs)"
    return ""
