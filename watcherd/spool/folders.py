"""The spool: folders on disk that hold every job, and the atomic moves between them.

    inbox/ --claim--> running/<id>.yaml --finish--> done/<id>.yaml | failed/<id>.yaml

A job is owned by the process that holds an exclusive flock on its file. The
lock follows the inode through renames and dies with the process, so a second
daemon (or this one after a crash) can tell an orphan from a job in progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcherd.spool.filters import is_job_name
from watcherd.spool.jobid import JOB_ID_EXAMPLE as JOB_ID_EXAMPLE  # re-exported: ids were here
from watcherd.spool.jobid import is_job_id as is_job_id
from watcherd.spool.jobid import new_job_id as new_job_id
from watcherd.spool.names import NameIndex
from watcherd.util.fsutil import fsync_dir, rename_noreplace, write_atomic

MAX_JOB_BYTES = 64 * 1024  # a job file is read whole; anything larger is refused unread

Signature = tuple[int, int, int]  # (inode, size, mtime_ns): a file that changed has another


class NotRetryable(ValueError):
    """requeue() was given something other than a failed job's id; ``str()`` says why."""


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def running(self) -> Path:
        return self.root / "running"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def repos(self) -> Path:
        return self.root / "repos"

    @property
    def index(self) -> Path:
        """Dropped names to job ids (watcherd/names.py); readable by everyone."""
        return self.root / "index"

    @property
    def cancel(self) -> Path:
        """Cancel requests (watcherd/spool/cancel.py), writable by those who may submit."""
        return self.root / "cancel"

    @property
    def state(self) -> Path:
        """Daemon-private bookkeeping (attempts), kept out of what containers can see."""
        return self.root / "state"

    def ensure(self) -> None:
        folders = (self.inbox, self.running, self.done, self.failed, self.out, self.repos)
        for folder in (*folders, self.index, self.cancel):
            folder.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(mode=0o700, exist_ok=True)

    def out_dir(self, job_id: str) -> Path:
        return self.out / job_id


@dataclass
class RunState:
    """What the daemon keeps on disk about a job while it runs (state/<id>.json)."""

    source_name: str
    attempts: int = 0
    started_at: str | None = None
    deadline: float | None = None  # time.time() when the running attempt times out
    exit_code: int | None = None
    auth_dir: str | None = None  # the login leased to it
    commit_before: str | None = None  # where its workspace started
    starting: bool = False  # the last attempt is counted but its container not made yet
    prepared: bool = False  # made ahead of a free slot, not started: its attempt not counted
    waiting: str = ""  # why its container has no place yet (a Swarm with no room)
    gateway_token: str | None = None  # its token at the gateway, kept for an adopted container
    disk_bound: str = ""  # how its disk budget holds: "filesystem" or "poll" (job/disk.py)
    disk_why: str = ""  # why it is polled

    @classmethod
    def from_json(cls, data: dict[str, Any], source_name: str) -> RunState:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("source_name", source_name)
        return cls(**values)


def read_run_state(layout: Layout, job_id: str, source_name: str = "") -> RunState:
    """A running job's record; a fresh one when there is none (or it cannot be read)."""
    try:
        loaded = json.loads((layout.state / f"{job_id}.json").read_text())
    except (FileNotFoundError, ValueError):
        loaded = {}
    return RunState.from_json(loaded if isinstance(loaded, dict) else {}, source_name)


@dataclass(frozen=True)
class InboxEntry:
    name: str
    signature: Signature
    mtime_ns: int
    is_regular: bool
    kind: str  # "file", "symlink", "directory", "fifo", ...
    ctime_ns: int = 0  # the last change to its bytes or metadata; no writer can set it


@dataclass
class Claimed:
    """A job this process owns: its file in running/, locked through ``fd``."""

    job_id: str
    path: Path
    fd: int
    data: bytes
    source_name: str
    # Claimed from the inbox by this process just now, under an id minted by the claim:
    # no runner has ever been asked for a container of this id (see JobLife._attempt_once).
    fresh: bool = False
    container: str | None = None  # its container's handle, once this process knows it

    @property
    def written_at(self) -> float:
        """When its writer last wrote it (its mtime, which the claim's rename keeps)."""
        return os.fstat(self.fd).st_mtime if self.fd >= 0 else time.time()

    def has_writer(self) -> bool | None:
        """A writer that still had the file open when it was claimed (see Spool.has_writer)."""
        return _has_writer(self.fd) if self.fd >= 0 else None

    def reread(self) -> None:
        """The file's bytes again, once its writer is done."""
        self.data = _read_limited(self.fd)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


class Spool:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.names = NameIndex(layout.index)

    # -- inbox -------------------------------------------------------------------------

    def scan_inbox(self) -> list[InboxEntry]:
        """Job-named entries in the inbox. Never follows links."""
        entries = []
        with os.scandir(self.layout.inbox) as listing:
            for entry in listing:
                if not is_job_name(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                entries.append(_inbox_entry(entry.name, st))
        return entries

    def stat_inbox(self, name: str) -> InboxEntry | None:
        """One inbox entry (after an event about it), or None if it is gone."""
        try:
            return _inbox_entry(name, os.lstat(self.layout.inbox / name))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def has_writer(self, name: str) -> bool | None:
        """Whether a process has the inbox file open for writing; None if the kernel
        cannot tell us here (then only the settle rule protects the file)."""
        fd = _open_regular(self.layout.inbox / name)
        if fd is None:
            return None
        try:
            return _has_writer(fd)
        finally:
            os.close(fd)

    def claim(self, name: str) -> Claimed | None:
        """Take a regular file out of the inbox into running/, or None if someone else did."""
        source = self.layout.inbox / name
        fd = _open_regular(source)
        if fd is None:
            return None
        try:
            job = self._claim_open(fd, name)
        except BaseException:
            os.close(fd)
            raise
        if job is None:
            os.close(fd)
        return job

    def _claim_open(self, fd: int, name: str) -> Claimed | None:
        if not _try_lock(fd):
            return None  # another claimer holds it
        # The lock is ours, but the name may already point elsewhere: another
        # claimer may have renamed this inode away before we locked it.
        source = self.layout.inbox / name
        try:
            current = os.stat(source, follow_symlinks=False)
        except FileNotFoundError:
            return None
        opened = os.fstat(fd)
        if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
            return None
        job_id = new_job_id(name)
        target = self.layout.running / f"{job_id}.yaml"
        # The dropped name is on disk before the job is in running/: a crash between the
        # two leaves a state file without a job (dropped later), never a job without it.
        self.write_state(job_id, RunState(source_name=name))
        self.names.record(name, job_id)  # findable by its name from the moment it moves
        try:
            rename_noreplace(source, target)
        except FileNotFoundError:
            self.drop_state(job_id)
            return None
        self._sync(self.layout.inbox, self.layout.running)
        return Claimed(
            job_id=job_id, path=target, fd=fd, data=_read_limited(fd), source_name=name,
            fresh=True,
        )  # fmt: skip

    def reject_special(self, entry: InboxEntry) -> str | None:
        """Move a symlink, directory, fifo or socket out of the inbox, never opening or
        following it. Returns the job id it was given, or None if it vanished."""
        job_id = new_job_id(entry.name)
        self.names.record(entry.name, job_id)
        try:
            rename_noreplace(self.layout.inbox / entry.name, self.layout.failed / f"{job_id}.yaml")
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.EPERM:  # link() fallback refuses directories
                raise
            os.rename(self.layout.inbox / entry.name, self.layout.failed / f"{job_id}.yaml")
        self._sync(self.layout.inbox, self.layout.failed)
        return job_id

    # -- running -----------------------------------------------------------------------

    def orphans(self) -> Iterator[Claimed]:
        """Jobs in running/ that no live process owns (their daemon died): now ours."""
        for path in sorted(self.layout.running.glob("*.yaml")):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            if not _try_lock(fd) or not path.exists():
                os.close(fd)
                continue
            job_id = path.name.removesuffix(".yaml")
            source = self.read_state(job_id, path.name).source_name
            data = _read_limited(fd)
            yield Claimed(job_id=job_id, path=path, fd=fd, data=data, source_name=source)

    def running_ids(self) -> set[str]:
        return {p.name.removesuffix(".yaml") for p in self.layout.running.glob("*.yaml")}

    def finish(self, job: Claimed, ok: bool) -> Path:
        """Move the job file to done/ or failed/ (bytes unchanged) and give up ownership."""
        folder = self.layout.done if ok else self.layout.failed
        target = folder / job.path.name
        rename_noreplace(job.path, target)
        self._sync(self.layout.running, folder)
        job.release()
        return target

    # -- daemon bookkeeping ------------------------------------------------------------

    def read_state(self, job_id: str, source_name: str = "") -> RunState:
        return read_run_state(self.layout, job_id, source_name)

    def write_state(self, job_id: str, state: RunState) -> None:
        data = json.dumps(dataclasses.asdict(state)).encode()
        write_atomic(self.layout.state / f"{job_id}.json", data, 0o600)

    def drop_state(self, job_id: str) -> None:
        (self.layout.state / f"{job_id}.json").unlink(missing_ok=True)

    def drop_stale_states(self, older_than: float) -> None:
        """State files of finished jobs (a crash between the move and the drop), of
        claims that never happened (a crash between the state write and the rename), and
        half-written ones (a crash during the write)."""
        now = time.time()
        for path in self.layout.state.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if now - path.stat().st_mtime > older_than:
                    path.unlink()
        for path in self.layout.state.glob("*.json"):
            job_id = path.name.removesuffix(".json")
            if (self.layout.running / f"{job_id}.yaml").exists():
                continue
            finished = any(
                (folder / f"{job_id}.yaml").exists()
                for folder in (self.layout.done, self.layout.failed)
            )
            try:
                if finished or now - path.stat().st_mtime > older_than:
                    path.unlink()
            except FileNotFoundError:
                continue

    # -- retry -------------------------------------------------------------------------

    def requeue(self, job_id: str) -> Path:
        """failed/<id>.yaml back into the inbox as a new job (it gets a new id when claimed).

        Takes a failed job's id and nothing else: a path such as ``../done/<id>`` would
        otherwise move any YAML file the caller can name into the inbox. Anything else
        raises NotRetryable saying why.
        """
        if not is_job_id(job_id):
            raise NotRetryable(f"{job_id!r} is not a job id (one like {JOB_ID_EXAMPLE})")
        source = self.layout.failed / f"{job_id}.yaml"
        try:
            mode = os.lstat(source).st_mode
        except FileNotFoundError:
            raise NotRetryable(self._not_failed(job_id)) from None
        if not stat.S_ISREG(mode):
            # A symlink, directory or fifo dropped into the inbox: never a job to run.
            raise NotRetryable(f"job {job_id} is a {_kind(mode)}, not a job file")
        stem = job_id.split("-", 1)[1].rsplit("-", 1)[0]
        target = self.layout.inbox / f"{stem}-retry-{secrets.token_hex(3)}.yaml"
        try:
            rename_noreplace(source, target)
        except FileNotFoundError:
            if os.path.lexists(source):
                raise  # no inbox folder
            # Retried by someone else just now.
            raise NotRetryable(self._not_failed(job_id)) from None
        self._sync(self.layout.failed, self.layout.inbox)
        return target

    def _not_failed(self, job_id: str) -> str:
        for folder, state in ((self.layout.running, "running"), (self.layout.done, "done")):
            if os.path.lexists(folder / f"{job_id}.yaml"):
                return f"job {job_id} is {state}, not failed"
        return f"no failed job {job_id} in {self.layout.failed}"

    @staticmethod
    def _sync(*folders: Path) -> None:
        for folder in folders:
            fsync_dir(folder)


def _open_regular(path: Path) -> int | None:
    """An fd on a regular file, never following a link or blocking on a fifo."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
            return None  # gone, or swapped for a link or socket: the next scan sees it
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _inbox_entry(name: str, st: os.stat_result) -> InboxEntry:
    return InboxEntry(
        name=name,
        signature=(st.st_ino, st.st_size, st.st_mtime_ns),
        mtime_ns=st.st_mtime_ns,
        is_regular=stat.S_ISREG(st.st_mode),
        kind=_kind(st.st_mode),
        ctime_ns=st.st_ctime_ns,
    )


def _has_writer(fd: int) -> bool | None:
    """The kernel refuses a read lease while any process has the file open for writing:
    an O(1) answer. Needs the file's owner or CAP_LEASE, and a local filesystem."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EBUSY):
            return True
        return None  # EACCES, EINVAL (NFS), ENOLCK: no answer here
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return False


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_limited(fd: int) -> bytes:
    """Read at most one byte past the job size limit: enough to say it is too big."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    remaining = MAX_JOB_BYTES + 1
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
