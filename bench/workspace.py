"""Figure 5: a job's workspace from the cache for a large repository (20,000 files, over
100 MB of history), with watcherd.workspace.Workspaces.create as the daemon calls it,
beside ``git worktree add`` and a full ``git clone`` of the same repository.

--quick uses a 2,000-file repository instead. Each repository is made once with git
fast-import and kept under /var/tmp/watcherd-bench, so later runs reuse it."""

from __future__ import annotations

import base64
import functools
import os
import random
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker

from bench.common import BENCH_CACHE, log, scratch
from bench.report import Figure, Report
from watcherd.repo.cache import RepoCache, cache_key
from watcherd.repo.workspace import Workspaces
from watcherd.util.fsutil import User, remove_tree

SECTION = "5 workspace"


@dataclass(frozen=True)
class Shape:
    files: int
    commits: int  # after the first, which adds every file
    changed: int  # files each of them rewrites

    @property
    def path(self) -> Path:
        return BENCH_CACHE / f"bigrepo-v1-{self.files}-{self.commits}-{self.changed}.git"


LARGE = Shape(20_000, 60, 500)  # about 106 MB packed
SMALL = Shape(2_000, 20, 100)  # --quick: the same comparison in seconds
JOB_USER = User(1000, 1000)  # what the daemon hands a workspace to when it runs as root


def run(report: Report, quick: bool, image: str, docker_client: docker.DockerClient) -> None:
    repo = big_repo(SMALL if quick else LARGE)
    files, pack_mb = _repo_size(repo)
    rounds = 1 if quick else 3
    with scratch("workspace") as base:
        times = _measure(base, repo, rounds)
    med = {name: statistics.median(values) for name, values in times.items()}
    shape = f"{files:,} files, {pack_mb:.0f} MB packed"
    worktree = med["git worktree add"]
    report.add(
        Figure(
            SECTION,
            f"Workspaces.create ({shape})",
            med["Workspaces.create"],
            "s",
            worktree,
            "git worktree add",
            note=f"median of {rounds}; chown to 1000:1000 included, as the daemon does as root",
        )
    )
    report.add(
        Figure(
            SECTION,
            "Workspaces.create / git worktree add",
            med["Workspaces.create"] / worktree,
            "x",
            goal=1.5,
        )
    )
    report.add(
        Figure(
            SECTION,
            "  of which: chown of the tree",
            med["chown to the job's user"],
            "s",
            note="Workspaces.create as the job's own user, subtracted",
        )
    )
    report.add(
        Figure(
            SECTION,
            "full git clone (file://, with checkout)",
            med["git clone"],
            "s",
            note=f"{med['git clone'] / worktree:.1f}x git worktree add",
        )
    )
    report.details["workspace"] = {
        "files": files,
        "pack_mb": pack_mb,
        "rounds": rounds,
        "seconds": times,
        "median_s": med,
    }


def _measure(base: Path, repo: Path, rounds: int) -> dict[str, list[float]]:
    root = base / "work"
    url = f"file://{repo}"
    cache = RepoCache(root, ("file",), fetch_timeout=600)
    log("workspace: filling the cache from the large repository")
    commit = cache.update(url, None, threading.Event())
    key = cache_key(url)
    cache_git = cache.cache_path(key)
    workspaces = Workspaces(root, keep=100, retention=86400, allowed_protocols=("file",))
    times: dict[str, list[float]] = {
        "Workspaces.create": [],
        "chown to the job's user": [],
        "git worktree add": [],
        "git clone": [],
    }

    def git(*args: str) -> None:
        subprocess.run(["git", *args], check=True, capture_output=True)

    me = User(os.geteuid(), os.getegid())

    def make(n: int, user: User) -> None:
        job_id = f"20260101T000000Z-ws{n}-abcdef"
        workspaces.create(job_id, key, commit, f"watcherd/{job_id}", user)

    def unmake(n: int) -> None:
        remove_tree(workspaces.path(f"20260101T000000Z-ws{n}-abcdef"))

    def worktree(n: int) -> None:
        git(
            "--git-dir",
            str(cache_git),
            "worktree",
            "add",
            "--quiet",
            "-b",
            f"bench/wt{n}",
            str(base / f"worktree{n}"),
            commit,
        )

    def unworktree(n: int) -> None:
        git(
            "--git-dir", str(cache_git), "worktree", "remove", "--force", str(base / f"worktree{n}")
        )
        git("--git-dir", str(cache_git), "branch", "-D", f"bench/wt{n}")

    def clone(n: int) -> None:
        git("clone", "--quiet", "--no-local", str(repo), str(base / f"clone{n}"))

    def unclone(n: int) -> None:
        shutil.rmtree(base / f"clone{n}")

    steps: list[tuple[str, Callable[[int], object], Callable[[int], object]]] = [
        ("Workspaces.create", functools.partial(make, user=JOB_USER), unmake),
        # As its own user: no chown (the difference is the chown's cost).
        ("chown to the job's user", functools.partial(make, user=me), unmake),
        ("git worktree add", worktree, unworktree),
        ("git clone", clone, unclone),
    ]
    log(f"workspace: {rounds} rounds (+1 untimed) of each")
    for n in range(rounds + 1):
        for what, action, undo in steps:
            began = time.monotonic()
            action(n)
            times[what].append(time.monotonic() - began)
            undo(n)
    # The first round warmed the page cache; the untimed one is dropped.
    result = {what: values[1:] for what, values in times.items()}
    result["chown to the job's user"] = [
        a - b
        for a, b in zip(result["Workspaces.create"], result["chown to the job's user"], strict=True)
    ]
    return result


def _repo_size(repo: Path) -> tuple[int, float]:
    files = subprocess.run(
        ["git", "--git-dir", str(repo), "ls-tree", "-r", "--name-only", "HEAD"],
        check=True,
        capture_output=True,
    ).stdout.count(b"\n")
    counts = subprocess.run(
        ["git", "--git-dir", str(repo), "count-objects", "-v"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info = dict(line.split(": ", 1) for line in counts.splitlines())
    return files, (int(info["size-pack"]) + int(info["size"])) / 1024


def big_repo(shape: Shape) -> Path:
    """The repository, made once (git fast-import) and kept for later runs."""
    final = shape.path
    if (final / "bench-complete").exists():
        return final
    BENCH_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"workspace: making the repository {final} (once)")
    began = time.monotonic()
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(tmp)], check=True)
    proc = subprocess.Popen(
        ["git", "--git-dir", str(tmp), "fast-import", "--quiet"], stdin=subprocess.PIPE
    )
    assert proc.stdin is not None
    rng = random.Random(11)
    paths = [f"src/mod{n // 100:03d}/file{n:05d}.txt" for n in range(shape.files)]

    def blob(size: int) -> bytes:
        # Text-like and hardly compressible, so that the history really is large.
        return base64.encodebytes(rng.randbytes(size * 3 // 4))

    def commit(n: int, changes: list[tuple[str, bytes]]) -> None:
        message = f"commit {n}\n".encode()
        out = proc.stdin
        assert out is not None
        out.write(b"commit refs/heads/main\n")
        out.write(f"committer bench <b@example.invalid> {1700000000 + n * 3600} +0000\n".encode())
        out.write(b"data %d\n%s" % (len(message), message))
        for path, data in changes:
            out.write(f"M 100644 inline {path}\n".encode())
            out.write(b"data %d\n%s\n" % (len(data), data))

    commit(0, [(p, blob(rng.randint(800, 2400))) for p in paths])
    for n in range(1, shape.commits + 1):
        changes = rng.sample(paths, shape.changed)
        commit(n, [(p, blob(rng.randint(2000, 5000))) for p in changes])
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("git fast-import failed")
    (tmp / "bench-complete").write_text(f"{shape}\n")
    os.rename(tmp, final)
    log(f"workspace: made in {time.monotonic() - began:.0f} s")
    return final
