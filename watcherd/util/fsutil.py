"""Durable file operations: renames that never replace, atomic writes, directory fsyncs.

A job changes state by moving between folders; these make each move atomic
(it happens entirely or not at all) and durable (it survives a power cut).
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename src to dst, failing with FileExistsError instead of replacing dst.

    ``os.rename`` silently replaces an existing target, so a claim built on it
    could overwrite another job. renameat2(RENAME_NOREPLACE) is atomic; where the
    kernel or filesystem lacks it, link()+unlink() gives the same guarantee for
    regular files (link fails when dst exists).
    """
    if _renameat2 is not None:
        result = _renameat2(
            _AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE
        )
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
    os.link(src, dst, follow_symlinks=False)
    os.unlink(src)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None
) -> None:
    """Write a whole file or nothing: readers never see half of it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def require_room(path: Path, minimum: int) -> None:
    """OSError(ENOSPC) when less than ``minimum`` bytes are free where ``path`` is."""
    free = free_bytes(path)
    if free < minimum:
        raise OSError(errno.ENOSPC, f"{free} bytes free under {path}, below min_free_disk")


def chown_tree(top: Path, owner: User) -> None:
    """lchown everything below ``top``: links are changed, never followed."""
    os.lchown(top, owner.uid, owner.gid)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in (*dirnames, *filenames):
            try:
                os.lchown(os.path.join(dirpath, name), owner.uid, owner.gid)
            except FileNotFoundError:
                continue


def remove_tree(path: Path) -> None:
    """Remove a folder a job wrote, whatever it did to the permissions inside; never
    follows a link. Missing is fine."""

    def unlock_and_retry(function: object, failed: str, exc_info: object) -> None:
        parent = os.path.dirname(failed)
        try:
            os.chmod(parent, 0o700)  # a job may have left folders it cannot write (0500)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
                shutil.rmtree(failed)
            else:
                os.unlink(failed)
        except FileNotFoundError:
            pass

    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return
    shutil.rmtree(path, onerror=unlock_and_retry)


def fresh_folder(path: Path, mode: int) -> None:
    """``path`` as a new, empty folder: whatever was there goes. A mount point (a job's
    own filesystem, watcherd/job/disk.py) stays where it is, emptied."""
    if os.path.ismount(path):
        with os.scandir(path) as entries:
            for entry in list(entries):
                remove_tree(Path(entry.path))
        return
    remove_tree(path)
    path.mkdir(mode=mode)


COPY_CHUNK = 1024 * 1024


def copy_tree(source: Path, target: Path) -> list[str]:
    """Copy what a job left in ``source`` into ``target`` (made here, or empty), onto
    another filesystem: folders and regular files with their modes, owners and times,
    holes kept (a sparse file takes no more room than it had); links as links and fifos
    as fifos (never followed or opened: make_safe removes them, and says so). Returns what
    could not be copied (sockets, devices), relative to ``source``."""
    skipped: list[str] = []
    _copy_folder(source, target, Path(), skipped)
    return skipped


def _copy_folder(source: Path, target: Path, relative: Path, skipped: list[str]) -> None:
    st = os.lstat(source)
    if not target.is_dir():
        target.mkdir(mode=0o700)
    with os.scandir(source) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode):
            _copy_folder(Path(entry.path), target / entry.name, relative / entry.name, skipped)
        elif stat.S_ISREG(mode):
            _copy_file(Path(entry.path), target / entry.name)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(entry.path), target / entry.name)
            _same_owner(target / entry.name, entry.stat(follow_symlinks=False))
        elif stat.S_ISFIFO(mode):
            os.mkfifo(target / entry.name, 0o600)
            _same_owner(target / entry.name, entry.stat(follow_symlinks=False))
        else:
            skipped.append(str(relative / entry.name))
    _same_metadata(target, st)


def _copy_file(source: Path, target: Path) -> None:
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600)  # fmt: skip
        try:
            offset = 0
            while offset < st.st_size:
                try:
                    offset = os.lseek(fd, offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:  # ENXIO: only a hole is left
                        raise
                    break
                end = os.lseek(fd, offset, os.SEEK_HOLE)
                while offset < end:
                    data = os.pread(fd, min(COPY_CHUNK, end - offset), offset)
                    if not data:
                        break
                    os.pwrite(out, data, offset)
                    offset += len(data)
            os.ftruncate(out, st.st_size)
            _same_metadata(target, st, out)
        finally:
            os.close(out)
    finally:
        os.close(fd)


def _same_owner(path: Path, st: os.stat_result) -> None:
    if os.geteuid() == 0:
        os.lchown(path, st.st_uid, st.st_gid)


def _same_metadata(path: Path, st: os.stat_result, fd: int | None = None) -> None:
    if os.geteuid() == 0:
        if fd is None:
            os.lchown(path, st.st_uid, st.st_gid)
        else:
            os.fchown(fd, st.st_uid, st.st_gid)
    if fd is None:
        os.chmod(path, stat.S_IMODE(st.st_mode))  # a folder this made: no link
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    else:
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def move_tree(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; across filesystems (or mounts), copy it as
    ``copy_tree`` does, then remove it."""
    try:
        os.rename(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    if stat.S_ISDIR(os.lstat(source).st_mode):
        copy_tree(source, target)
    elif stat.S_ISREG(os.lstat(source).st_mode):
        _copy_file(source, target)
    remove_tree(source)


@dataclass(frozen=True)
class User:
    """The uid:gid a command runs as (the job's user, for files the job will own)."""

    uid: int
    gid: int

    @classmethod
    def parse(cls, value: str) -> User:
        uid, _, gid = value.partition(":")
        return cls(int(uid), int(gid))

    @property
    def is_current(self) -> bool:
        return os.geteuid() == self.uid and os.getegid() == self.gid

    def __str__(self) -> str:
        return f"{self.uid}:{self.gid}"
