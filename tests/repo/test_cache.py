from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.git_server import make_repo
from watcherd.repo.cache import RepoCache, RepoError, cache_key

NEVER = threading.Event()


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def upstream(tmp_path: Path) -> str:
    return f"file://{make_repo(tmp_path / 'up' / 'widgets.git')}"


@pytest.fixture
def cache(tmp_path: Path) -> RepoCache:
    return RepoCache(tmp_path / "root", ("file",), fetch_timeout=60)


def test_keys_tell_urls_with_the_same_name_apart() -> None:
    one, two = cache_key("https://h/a/widgets.git"), cache_key("https://h/b/widgets.git")
    assert one.startswith("widgets-") and two.startswith("widgets-") and one != two


def test_update_resolves_the_default_branch_branches_tags_and_commits(
    cache: RepoCache, upstream: str
) -> None:
    main = cache.update(upstream, None, NEVER)
    bare = upstream.removeprefix("file://")
    assert main == git("--git-dir", bare, "rev-parse", "main")
    assert cache.update(upstream, "feature", NEVER) == git(
        "--git-dir", bare, "rev-parse", "feature"
    )
    assert cache.update(upstream, "v1", NEVER) == main
    assert cache.update(upstream, main[:12], NEVER) == main
    path = cache.cache_path(cache_key(upstream))
    assert git("--git-dir", str(path), "config", "gc.auto") == "0"
    assert not (path / "hooks").exists()


def test_a_missing_ref_is_a_clear_permanent_error(cache: RepoCache, upstream: str) -> None:
    with pytest.raises(RepoError, match="ref 'nope' not found") as caught:
        cache.update(upstream, "nope", NEVER)
    assert not caught.value.transient


def test_an_unreachable_repository_is_transient(cache: RepoCache, tmp_path: Path) -> None:
    remote = RepoCache(tmp_path / "root", ("git",), fetch_timeout=30)
    with pytest.raises(RepoError, match="network failure") as caught:
        remote.update("git://127.0.0.1:1/nothing.git", None, NEVER)
    assert caught.value.transient
    with pytest.raises(RepoError, match="could not fetch") as refused:
        cache.update(f"file://{tmp_path}/missing.git", None, NEVER)
    assert not refused.value.transient


def test_results_come_in_from_a_bundle_checked_by_fsck(
    cache: RepoCache, upstream: str, tmp_path: Path
) -> None:
    before = cache.update(upstream, None, NEVER)
    work = tmp_path / "work"
    git("clone", "-q", upstream.removeprefix("file://"), str(work))
    git("-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "--allow-empty", "-m", "one",
        cwd=work)  # fmt: skip
    (work / "new.txt").write_text("new\n")
    git("add", "new.txt", cwd=work)
    git("-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "two", cwd=work)
    git("branch", "-f", "watcherd/job-1", "HEAD", cwd=work)
    bundle = tmp_path / "branch.bundle"
    git("bundle", "create", "-q", str(bundle), "refs/heads/watcherd/job-1", f"^{before}", cwd=work)

    results = cache.take_results(upstream, bundle, "watcherd/job-1", before)
    assert len(results.commits) == 2 and results.commits[-1] == results.head
    patch = tmp_path / "changes.patch"
    assert cache.write_patch(upstream, before, results.head, patch, limit=1024)
    assert "+new" in patch.read_text()
    # Over the limit (a small bundle can hold huge blobs): only the list of files.
    assert not cache.write_patch(upstream, before, results.head, patch, limit=1)
    assert patch.read_text().splitlines()[-1] == "A\tnew.txt"
    # Without a bundle (no commits) the branch starts and ends where the job started.
    empty = cache.take_results(upstream, None, "watcherd/job-2", before)
    assert (empty.head, empty.commits) == (before, ())

    forged = tmp_path / "forged.bundle"  # names another repository: never handed to git
    forged.write_text(f"gitdir: {cache.cache_path(cache_key(upstream))}\n")
    with pytest.raises(RepoError, match="not a git bundle"):
        cache.take_results(upstream, forged, "watcherd/job-4", before)
    bundle.write_bytes(bundle.read_bytes()[:-40])  # truncated: refused, nothing half-saved
    with pytest.raises(RepoError, match="could not be saved"):
        cache.take_results(upstream, bundle, "watcherd/job-3", before)


def test_a_fetch_begun_after_a_job_was_written_serves_it_and_a_later_job_fetches(
    cache: RepoCache, upstream: str, tmp_path: Path
) -> None:
    bare = upstream.removeprefix("file://")
    written_before = time.time() - 1.0  # a job written a second before the fetch
    first = cache.update(upstream, None, NEVER)
    # A commit lands upstream after that fetch began.
    work = tmp_path / "clone"
    git("clone", "-q", bare, str(work))
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m",
        "later", cwd=work)  # fmt: skip
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    # A job written before the fetch began takes it (a burst shares one fetch) ...
    assert cache.update(upstream, None, NEVER, written_at=written_before) == first
    # ... one written after the push gets a fetch of its own, with the new commit.
    newest = cache.update(upstream, None, NEVER, written_at=time.time())
    assert newest == git("--git-dir", bare, "rev-parse", "main") != first
    # Without a time (as before), every call fetches.
    assert cache.update(upstream, None, NEVER) == newest
