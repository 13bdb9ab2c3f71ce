"""Repository caches and results: the git repositories the daemon owns and no job writes.

    cache/<key>.git   bare mirror of one upstream repository. Fetched by the daemon under a
                      lock on disk (flock), so several daemons on one root take turns; its
                      objects are mounted read-only into that repository's jobs. Never
                      pruned (gc.auto=0): workspaces and results borrow its objects.
    repos/<key>.git   the jobs' results: one branch per job, taken in from the bundle the
                      worker leaves, every object checked (fsck). It borrows the cache's
                      objects and is never mounted into a job, so no job reads another's.

``<key>`` is the repository's name and a hash of its URL: two URLs never share a cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from watcherd.repo.git import GitError, git_env, run_git
from watcherd.repo.url import redact, repo_name
from watcherd.util.fsutil import remove_tree

LOCK_POLL_SECONDS = 0.05
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256


# File times come from the kernel's coarse clock, a tick (up to ~10 ms) behind time.time():
# a fetch must have begun this much after a job's mtime to have begun after its write.
MTIME_SLACK_SECONDS = 0.02


class RepoError(RuntimeError):
    """The repository could not be fetched or the ref resolved; ``transient`` if worth
    another attempt (the network)."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Stopped(RuntimeError):
    """The daemon is stopping while this job waited for a cache lock."""


@dataclass(frozen=True)
class Results:
    branch: str
    head: str
    commits: tuple[str, ...]  # commit_before..head, oldest first


def is_bundle(path: Path) -> bool:
    """A git bundle by its first line; anything else (a "gitdir:" file naming another
    repository, say) is never handed to git."""
    try:
        with path.open("rb") as handle:
            return handle.readline(64) in (b"# v2 git bundle\n", b"# v3 git bundle\n")
    except OSError:
        return False


def cache_key(url: str) -> str:
    name = _UNSAFE.sub("-", repo_name(url)).strip("-.")[:40] or "repo"
    return f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:10]}"


class RepoCache:
    def __init__(self, root: Path, allowed_protocols: Sequence[str], fetch_timeout: float):
        self.root = root
        self.allowed_protocols = tuple(allowed_protocols)
        self.fetch_timeout = fetch_timeout
        self._fetch_began: dict[str, float] = {}  # key -> when its last good fetch began
        self._fetch_began_at: dict[str, float] = {}  # the same, as wall-clock time

    def cache_path(self, key: str) -> Path:
        return self.root / "cache" / f"{key}.git"

    def results_path(self, key: str) -> Path:
        return self.root / "repos" / f"{key}.git"

    # -- the cache -----------------------------------------------------------------------

    def update(
        self, url: str, ref: str | None, stop: threading.Event, written_at: float | None = None
    ) -> str:
        """Fetch ``url`` into its cache and return the commit ``ref`` names (the remote's
        default branch when None). ``written_at``: when the job was written (wall clock);
        a fetch that began after that is as fresh as the job can ask for."""
        key = cache_key(url)
        path = self.cache_path(key)
        asked = time.monotonic()
        with self._locked(key, stop):
            if not (path / "HEAD").is_file():
                self._create_bare(path, alternates=None)
            # A fetch that began after the job was written, or after this call (jobs that
            # waited for the lock meanwhile), is as fresh as the job's own would be: a
            # burst of jobs on one repository takes one fetch, not one each.
            fresh_for_job = written_at is not None and self._fetch_began_at.get(
                key, float("-inf")
            ) > min(written_at + MTIME_SLACK_SECONDS, time.time())
            if not fresh_for_job and self._fetch_began.get(key, -1.0) < asked:
                began, began_at = time.monotonic(), time.time()
                self._fetch(
                    path,
                    url,
                    ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*",
                     "+HEAD:refs/upstream/HEAD"],
                    prune=True,
                )  # fmt: skip
                self._fetch_began[key] = began
                self._fetch_began_at[key] = began_at
            commit = self._resolve(path, ref)
            if commit is None and ref is not None:
                # Not a branch or tag the remote advertises: a commit id or another ref.
                with contextlib.suppress(RepoError):
                    self._fetch(path, url, [f"+{ref}:refs/upstream/wanted"], prune=False)
                    commit = self._resolve_one(path, "refs/upstream/wanted")
                    if commit is not None:
                        self._git(path, "update-ref", f"refs/upstream/pins/{commit}", commit)
        if commit is None:
            raise RepoError(f"ref '{ref or 'default branch'}' not found in {redact(url)}")
        return commit

    def _fetch(self, path: Path, url: str, refspecs: list[str], prune: bool) -> None:
        args = ["fetch", "--quiet", "--force", "--no-write-fetch-head"]
        if prune:
            args.append("--prune")
        try:
            self._git(path, *args, "--", url, *refspecs, timeout=self.fetch_timeout)
        except GitError as exc:
            if exc.transient:
                raise RepoError(
                    f"network failure while fetching {redact(url)} (will be retried)",
                    transient=True,
                ) from exc
            raise RepoError(f"could not fetch {redact(url)}: {redact(exc.last_line())}") from exc

    def _resolve(self, path: Path, ref: str | None) -> str | None:
        if ref is None:
            return self._loose_ref(path, "refs/upstream/HEAD") or self._resolve_one(
                path, "refs/upstream/HEAD"
            )
        for candidate in (f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
            commit = self._resolve_one(path, candidate)
            if commit is not None:
                return commit
        return None

    @staticmethod
    def _loose_ref(path: Path, name: str) -> str | None:
        """A ref the fetch just wrote, read as the file it is (a git process less per
        job); None when it is not a loose ref holding an object id (then git is asked).
        Only for names the daemon chose: never a path from a job file. The id is not
        peeled: the upstream HEAD names a commit, and the checkout refuses anything else."""
        try:
            text = (path / name).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text if _OBJECT_ID.fullmatch(text) else None

    def _resolve_one(self, path: Path, name: str) -> str | None:
        try:
            out = self._git(path, "rev-parse", "--verify", "--quiet", "--end-of-options",
                            f"{name}^{{commit}}")  # fmt: skip
        except GitError:
            return None
        return out.strip() or None

    # -- results -------------------------------------------------------------------------

    def take_results(
        self, url: str, bundle: Path | None, branch: str, commit_before: str
    ) -> Results:
        """The job's branch from the worker's bundle into repos/<key>.git, every object
        checked; the bundle is data here, never a repository git would run anything from.
        Without a bundle (nothing committed) the branch is made at ``commit_before``."""
        key = cache_key(url)
        path = self.results_path(key)
        with self._locked(f"{key}.results", None):
            if not (path / "HEAD").is_file():
                # Relative, so the root can move: repos/<key>.git/objects → cache/<key>.git/objects
                self._create_bare(path, alternates=f"../../../cache/{key}.git/objects")
        if bundle is not None and not is_bundle(bundle):
            raise RepoError("the job's branch.bundle is not a git bundle; nothing saved")
        try:
            if bundle is None:
                self._git(path, "update-ref", f"refs/heads/{branch}", commit_before)
                # Its head is commit_before (a commit id, resolved when the job started)
                # and no commits are new: nothing to ask git.
                return Results(branch, commit_before, ())
            self._git(
                path, "-c", "transfer.fsckObjects=true", "-c", "core.bigFileThreshold=16m",
                "fetch", "--quiet", "--no-tags",
                "--no-write-fetch-head", "--", str(bundle),
                f"+refs/heads/{branch}:refs/heads/{branch}",
                protocols=("file",),
            )  # fmt: skip
            head = self._git(path, "rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}")
            listed = self._git(path, "rev-list", "--reverse", f"{commit_before}..{head.strip()}")
        except GitError as exc:
            raise RepoError(f"the job's commits could not be saved: {exc.last_line()}") from exc
        return Results(branch, head.strip(), tuple(listed.split()))

    def write_patch(
        self, url: str, commit_before: str, head: str, target: Path, limit: int
    ) -> bool:
        """``git diff`` from the job's start to its branch, as a file: computed here, from
        objects fsck checked, so the agent cannot make the patch differ from the branch.
        Above ``limit`` bytes of changed content (a few KB of bundle can hold gigabytes)
        only the list of changed files is written; False then."""
        path = self.results_path(cache_key(url))
        tmp = target.with_name(f".{target.name}.tmp")
        remove_tree(tmp)
        span = (commit_before, head)
        if commit_before == head:  # no change: git diff would write an empty file
            tmp.write_bytes(b"")
            os.replace(tmp, target)
            return True
        try:
            whole = self._changed_bytes(path, *span) <= limit
            if whole:
                self._git(path, "diff", "--binary", "--full-index", "--no-ext-diff",
                          "--no-textconv", f"--output={tmp}", *span, "--")  # fmt: skip
            else:
                listing = self._git(path, "diff", "--name-status", "--no-renames", *span, "--")
                tmp.write_text(
                    f"# The changes are larger than {limit} bytes: not written out here.\n"
                    f"# Fetch the branch instead (README, Workspaces and results).\n{listing}"
                )
            os.replace(tmp, target)
        except GitError as exc:
            remove_tree(tmp)
            raise RepoError(f"changes.patch could not be written: {exc.last_line()}") from exc
        return whole

    def _changed_bytes(self, path: Path, before: str, head: str) -> int:
        """The size of every blob the change brings in, without reading one."""
        raw = self._git(path, "diff", "--raw", "-z", "--no-abbrev", "--no-renames", before, head)
        blobs = set()
        for part in raw.split("\0"):  # ":old-mode new-mode old-id new-id status", path, ...
            fields = part.split()
            if part.startswith(":") and len(fields) >= 4 and set(fields[3]) != {"0"}:
                blobs.add(fields[3])  # an all-zero id: deleted, nothing comes in
        if not blobs:
            return 0
        sizes = self._git(path, "cat-file", "--batch-check=%(objectsize)", stdin="\n".join(blobs))
        return sum(int(size) for size in sizes.split() if size.isdigit())

    # -- plumbing ------------------------------------------------------------------------

    def _create_bare(self, path: Path, alternates: str | None) -> None:
        """Made beside its final name and renamed in: a crash never leaves half a repo."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.new")
        shutil.rmtree(tmp, ignore_errors=True)
        # 0644 files whatever the daemon's umask: the job's uid reads the cache's objects.
        self._git(None, "init", "--quiet", "--bare", "--template=", "--shared=0644", str(tmp))
        for key, value in (
            ("gc.auto", "0"),  # never prune: workspaces and results borrow these objects
            ("core.logAllRefUpdates", "always"),  # a reused branch: (branch) keeps old tips
            ("receive.fsckObjects", "true"),
        ):
            self._git(tmp, "config", key, value)
        if alternates is not None:
            info = tmp / "objects" / "info"
            info.mkdir(parents=True, exist_ok=True)
            (info / "alternates").write_text(alternates + "\n")
        os.rename(tmp, path)

    def _git(
        self, path: Path | None, *args: str, timeout: float = 120.0,
        protocols: Sequence[str] | None = None, stdin: str | None = None,
    ) -> str:  # fmt: skip
        env = git_env(protocols or self.allowed_protocols, GIT_CONFIG_NOSYSTEM="1")
        prefix = ["--git-dir", str(path)] if path is not None else []
        return run_git([*prefix, *args], env=env, timeout=timeout, stdin=stdin)

    @contextlib.contextmanager
    def _locked(self, name: str, stop: threading.Event | None) -> Iterator[None]:
        """An flock on cache/<name>.lock: held across daemons on one root, released when
        the process dies. Polled, so a stopping daemon does not hang on it."""
        lock = self.root / "cache" / f"{name}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                        raise
                if stop is None:
                    time.sleep(LOCK_POLL_SECONDS)
                elif stop.wait(LOCK_POLL_SECONDS):
                    raise Stopped(f"stopping while waiting for {lock}")
            yield
        finally:
            os.close(fd)
