from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.git_server import make_repo
from watcherd.repo.cache import RepoCache, cache_key
from watcherd.repo.workspace import Workspaces
from watcherd.util.fsutil import User

ME = User(os.getuid(), os.getgid())


@pytest.fixture
def made(tmp_path: Path) -> tuple[Workspaces, str, str]:
    root = tmp_path / "root"
    url = f"file://{make_repo(tmp_path / 'up' / 'widgets.git')}"
    commit = RepoCache(root, ("file",), 60).update(url, None, threading.Event())
    return Workspaces(root, keep=2, retention=3600, allowed_protocols=("file",)), url, commit


def test_a_workspace_is_a_checkout_that_borrows_the_caches_objects(
    made: tuple[Workspaces, str, str],
) -> None:
    workspaces, url, commit = made
    key = cache_key(url)
    ws = workspaces.create("job-1", key, commit, "watcherd/job-1", ME)
    assert (ws.path / "README.md").read_text() == "# demo\n"
    alternates = (ws.path / ".git/objects/info/alternates").read_text().strip()
    assert alternates == f"../../../../cache/{key}.git/objects"
    assert (ws.path / ".git/objects" / alternates).resolve() == ws.cache_objects.resolve()
    assert ws.cache_target == f"/cache/{key}.git/objects"  # four levels below /, as on the host
    head = subprocess.run(["git", "-C", str(ws.path), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    assert head == commit
    assert not list((ws.path / ".git/objects/pack").glob("*.pack"))  # nothing copied
    (ws.path / "planted").write_text("x")
    again = workspaces.create("job-1", key, commit, "watcherd/job-1", ME)  # next attempt
    assert not (again.path / "planted").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="sealing hands the workspace to nobody: needs root")
def test_a_sealed_workspace_is_nobodys_and_git_refuses_it(
    made: tuple[Workspaces, str, str],
) -> None:
    workspaces, url, commit = made
    ws = workspaces.create("job-1", cache_key(url), commit, "b", User(1000, 1000))
    config = str(ws.path / ".git" / "config")
    subprocess.run(["git", "config", "--file", config, "core.fsmonitor", "touch PWNED"],
                   check=True)  # fmt: skip
    workspaces.seal("job-1")
    assert {p.lstat().st_uid for p in [ws.path, *ws.path.rglob("*")]} == {65534}
    status = subprocess.run(["git", "status"], cwd=ws.path, capture_output=True, text=True)
    assert status.returncode != 0 and "dubious ownership" in status.stderr
    assert not (ws.path / "PWNED").exists()


def test_prune_keeps_the_newest_and_the_running(made: tuple[Workspaces, str, str]) -> None:
    workspaces, url, commit = made
    for n in range(5):
        path = workspaces.create(f"job-{n}", cache_key(url), commit, "b", ME).path
        os.utime(path, (time.time() - 100 + n, time.time() - 100 + n))
    workspaces.prune(running={"job-0"})
    assert sorted(p.name for p in workspaces.folder.iterdir()) == ["job-0", "job-3", "job-4"]
    old = time.time() - 7200
    os.utime(workspaces.path("job-4"), (old, old))
    workspaces.prune(running=set())
    assert sorted(p.name for p in workspaces.folder.iterdir()) == ["job-0", "job-3"]
