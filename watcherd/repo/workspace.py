"""Per-job workspaces: a fresh work tree for every attempt, handed to no other job.

    workspaces/<id>/   the job's checkout, owned by the job's user. Its .git borrows the
                       cache's objects through the relative alternates path
                       ../../../../cache/<key>.git/objects, which resolves on the host
                       (workspaces/<id>/.git/objects is four levels below the root) and in
                       the container alike: there the workspace is /work/<repo_dir> and the
                       cache's objects are mounted read-only at /cache/<key>.git/objects.
                       So a workspace costs a checkout, not a copy of the history.

After its job a workspace is sealed. When the daemon is root it is handed to nobody
(65534): git then refuses to work in it for any other user ("dubious ownership"), so
nothing the agent planted (hooks, core.fsmonitor, a bare repository in a subfolder) runs
when someone looks at it on the host. Without root it cannot be handed over, so it is
removed at once. Sealed workspaces are kept for inspection: the newest ``keep``, for at
most ``retention`` seconds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from watcherd.repo.cache import RepoError
from watcherd.repo.git import GitError, git_env, run_git
from watcherd.util.fsutil import User, chown_tree, fresh_folder, remove_tree

log = logging.getLogger("watcherd.workspace")

CONTAINER_CACHE = "/cache"  # four levels above a workspace's objects, like the root on the host
NOBODY = User(65534, 65534)


@dataclass(frozen=True)
class Workspace:
    path: Path
    cache_objects: Path  # on the host
    cache_target: str  # where the container sees them, read-only


def _init_repository(git_dir: Path, branch: str) -> None:
    """What ``git init --template= -b <branch>`` makes (git 2.x, no global or system
    config: the daemon runs git with neither), written here: one git process less per
    job. The branch name is checked by the checkout that follows."""
    for folder in ("", "objects", "objects/info", "objects/pack", "refs", "refs/heads",
                   "refs/tags"):  # fmt: skip
        (git_dir / folder).mkdir(mode=0o755)
    (git_dir / "config").write_text(
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
        "\tlogallrefupdates = true\n"
    )
    (git_dir / "HEAD").write_text(f"ref: refs/heads/{branch}\n")


class Workspaces:
    def __init__(
        self, root: Path, keep: int, retention: float, allowed_protocols: Sequence[str]
    ) -> None:
        self.folder = root / "workspaces"
        self.cache_root = root / "cache"
        self.keep = keep
        self.retention = retention
        self.allowed_protocols = tuple(allowed_protocols)

    def path(self, job_id: str) -> Path:
        return self.folder / job_id

    def describe(self, job_id: str, key: str) -> Workspace:
        """The workspace of a job that has one (a container being adopted)."""
        return Workspace(
            path=self.path(job_id),
            cache_objects=self.cache_root / f"{key}.git" / "objects",
            cache_target=f"{CONTAINER_CACHE}/{key}.git/objects",
        )

    def create(
        self, job_id: str, key: str, commit: str, branch: str, user: User,
        earlier: tuple[Path, str] | None = None,
    ) -> Workspace:  # fmt: skip
        """A fresh work tree at ``commit`` on ``branch``, then handed to the job's user.
        Whatever an earlier attempt left is removed first: every attempt starts clean.
        ``earlier`` (a results repository and a branch: a resumed job) brings in that
        branch's own objects, and only them."""
        workspace = self.describe(job_id, key)
        path = workspace.path
        self.folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        fresh_folder(path, 0o700)  # on the job's own filesystem, bound here, or the root's
        env = git_env(
            self.allowed_protocols,
            GIT_CONFIG_NOSYSTEM="1",
            GIT_CONFIG_GLOBAL="/dev/null",
            HOME=str(path),
        )
        try:
            _init_repository(path / ".git", branch)
            alternates = path / ".git" / "objects" / "info" / "alternates"
            alternates.write_text(f"../../../../cache/{key}.git/objects\n")
            if earlier is not None:
                results, earlier_branch = earlier
                run_git(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--",
                         str(results), f"refs/heads/{earlier_branch}"],
                        cwd=path, env={**env, "GIT_ALLOW_PROTOCOL": "file"})  # fmt: skip
            run_git(["checkout", "--quiet", "-B", branch, commit], cwd=path, env=env)
        except GitError as exc:
            raise RepoError(f"could not make the workspace: {exc.last_line()}") from exc
        if os.geteuid() == 0 and not user.is_current:
            chown_tree(path, user)
        return workspace

    def seal(self, job_id: str) -> None:
        """After the job: nobody's, or gone (see the module's doc)."""
        path = self.path(job_id)
        if not path.exists():
            return
        if os.geteuid() != 0:
            remove_tree(path)
            return
        chown_tree(path, NOBODY)
        os.chmod(path, 0o755)  # readable for inspection; git still refuses to run in it
        now = time.time()
        os.utime(path, (now, now))  # the seal time orders pruning

    def prune(
        self,
        running: Collection[str] | Callable[[], Collection[str]],
        remove: Callable[[Path], None] = remove_tree,
    ) -> None:
        """Remove sealed workspaces beyond the newest ``keep`` or older than ``retention``
        (``remove``: how; one on its job's filesystem goes with it). ``running`` may be
        asked only once the folder is listed: a job that made its workspace since it was
        asked would not be in it."""
        try:
            listed = list(os.scandir(self.folder))
        except FileNotFoundError:
            return
        busy = running() if callable(running) else running
        entries = [e for e in listed if e.name not in busy]
        by_age = sorted(entries, key=lambda e: e.stat(follow_symlinks=False).st_mtime, reverse=True)
        cutoff = time.time() - self.retention
        for index, entry in enumerate(by_age):
            if index >= self.keep or entry.stat(follow_symlinks=False).st_mtime < cutoff:
                log.debug("removing workspace %s", entry.path)
                remove(Path(entry.path))
