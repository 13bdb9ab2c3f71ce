"""A world to publish into: a git server over HTTP that takes pushes (tests/support/git_http.py)
and a scripted GitHub API (tests/support/forge_api.py), both on 127.0.0.1, an upstream
repository ``acme/widgets`` on it, a 0600 token file, and jobs that ended as the daemon
would have filed them (``finished_job``: its cache fetched, the agent's commits taken in
from a bundle by the daemon's own RepoCache, exit.json written by write_exit_json).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.forge_api import ScriptedGitHub
from tests.support.git_http import GitHttpServer
from tests.support.git_server import make_repo
from watcherd.config import Config, load_config
from watcherd.job.results import JobState, Outcome, SavedWork, write_exit_json
from watcherd.repo.cache import RepoCache, cache_key
from watcherd.spool.folders import Layout, new_job_id
from watcherd.spool.names import NameIndex

REPO = "acme/widgets"


def git(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})  # fmt: skip
    return done.stdout.strip()


@dataclass
class World:
    tmp: Path
    root: Path
    token: str
    token_file: Path
    git: GitHttpServer
    api: ScriptedGitHub

    @property
    def upstream(self) -> Path:
        return self.tmp / "served" / f"{REPO}.git"

    @property
    def repo_url(self) -> str:
        return self.git.url(f"{REPO}.git")

    def config_data(self, **publish: Any) -> dict[str, Any]:
        forge: dict[str, Any] = {"type": "github", "api_url": self.api.url,
                                 "token_file": str(self.token_file)}  # fmt: skip
        forge.update(publish.pop("forge", {}))
        return {
            "root": str(self.root),
            "allowed_protocols": ["http", "https", "file"],
            "publish": {"forges": {self.git.host: forge}, **publish},
        }

    def config(self, **publish: Any) -> Config:
        path = self.tmp / f"config-{secrets.token_hex(3)}.yaml"
        path.write_text(yaml.safe_dump(self.config_data(**publish)))
        return load_config(path, environ={})

    def remote_branch(self, branch: str) -> str | None:
        try:
            return git("--git-dir", str(self.upstream), "rev-parse", "--verify", "--quiet",
                       f"refs/heads/{branch}")  # fmt: skip
        except subprocess.CalledProcessError:
            return None

    def close(self) -> None:
        self.git.close()
        self.api.close()


def make_world(tmp: Path, push_delay: float = 0.0, **api: Any) -> World:
    served = tmp / "served"
    (served / "acme").mkdir(parents=True)
    make_repo(served / f"{REPO}.git")
    # receive-pack over http-backend needs an authenticated user (REMOTE_USER), given.
    token = f"github_pat_{secrets.token_hex(20)}"
    tokens = {token}
    token_file = tmp / "secrets" / "github.token"
    token_file.parent.mkdir()
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    root = tmp / "work"
    Layout(root).ensure()
    server = GitHttpServer(served, "x-access-token", tokens, push_delay=push_delay)
    forge = ScriptedGitHub(tokens, {REPO: "main"}, **api)
    return World(tmp, root, token, token_file, server, forge)


NEVER = threading.Event()


def finished_job(
    world: World, config: Config, name: str = "fix.yaml", *,
    commits: list[dict[str, str | None]] | None = None, branch: str | None = None,
    repo_ref: str | None = None, start: str | None = None, orphan: bool = False,
    state: JobState = JobState.DONE, summary: str = "# Fix the README\n\nIt said demo.\n",
    **job: Any,
) -> str:  # fmt: skip
    """A job filed as the daemon files it, whose agent made ``commits`` (each {path:
    content, or None to delete}) on top of ``start`` (default: where the job started),
    or on an orphan history. Returns its id."""
    layout = Layout(config.root)
    job_id = new_job_id(name)
    NameIndex(layout.index).record(name, job_id)  # as the claim does: findable by its name
    spec: dict[str, Any] = {"repo_url": world.repo_url, "prompt": "Fix the README", **job}
    if branch is not None:
        spec["branch"] = branch
    if repo_ref is not None:
        spec["repo_ref"] = repo_ref
    cache = RepoCache(config.root, config.allowed_protocols, fetch_timeout=60)
    before = cache.update(world.repo_url, repo_ref, NEVER)
    result_branch = branch or f"watcherd/{job_id}"
    out_dir = layout.out_dir(job_id)
    out_dir.mkdir(parents=True)
    bundle = None
    if commits:
        work = world.tmp / f"agent-{job_id}"
        git("clone", "-q", str(world.upstream), str(work))
        who, mail = "agent", "agent@example.invalid"
        ident = {"GIT_AUTHOR_NAME": who, "GIT_AUTHOR_EMAIL": mail,
                 "GIT_COMMITTER_NAME": who, "GIT_COMMITTER_EMAIL": mail}  # fmt: skip
        if orphan:
            git("checkout", "-q", "--orphan", result_branch, cwd=work)
        else:
            git("checkout", "-q", "-B", result_branch, start or before, cwd=work)
        for number, change in enumerate(commits):
            for path, content in change.items():
                target = work / path
                if content is None:
                    git("rm", "-q", path, cwd=work)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
                git("add", path, cwd=work)
            git(
                "commit", "-q", "--allow-empty", "-m", f"agent change {number}", cwd=work, env=ident
            )
        bundle = out_dir / "branch.bundle"
        span = [result_branch] if orphan else [result_branch, f"^{before}"]
        if not orphan and start is not None:
            span = [result_branch, f"^{start}"]
        git("bundle", "create", "-q", str(bundle), *span, cwd=work)
    results = cache.take_results(world.repo_url, bundle, result_branch, before)
    if bundle is not None:
        bundle.unlink()
    (out_dir / "summary.md").write_text(summary)
    saved = SavedWork(str(cache.results_path(cache_key(world.repo_url))), results.branch,
                      before, results.head, results.commits)  # fmt: skip
    outcome = Outcome(state, "finished", attempts=1, exit_code=0, saved=saved, agent="codex")
    write_exit_json(out_dir, job_id, name, outcome)
    folder = layout.done if state is JobState.DONE else layout.failed
    (folder / f"{job_id}.yaml").write_text(yaml.safe_dump(spec))
    return job_id


def files_holding(top: Path, secret: str) -> list[Path]:
    needle = secret.encode()
    found = []
    for folder, _, names in os.walk(top):
        for name in names:
            path = Path(folder) / name
            if path.is_symlink():
                continue
            try:
                if needle in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found
