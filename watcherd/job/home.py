"""A fresh agent home for every job: the operator's config in, the job's session out.

homes/<id>/   the home of one job's agent (0700, the job's user), mounted where its
              profile says (Codex: /home/codex/.codex, CODEX_HOME). It starts with copies
              of the operator's config files for that agent (root's and read-only when the
              daemon is root), some of them rewritten by the job's wiring (a login's
              stand-in among them: the login itself never comes here). After the job the
              sessions move to out/<id>/sessions/ (where a later job can resume them); the
              home is removed. No job sees another's home, and nothing a job writes there
              reaches a later job or the operator's dir.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from watcherd.agents.base import AgentProfile
from watcherd.util.fsutil import (
    User,
    chown_tree,
    fresh_folder,
    move_tree,
    remove_tree,
    write_atomic,
)
from watcherd.util.safeio import read_whole

log = logging.getLogger("watcherd.home")

MAX_SHARED_BYTES = 1024 * 1024


class AgentHomes:
    def __init__(self, root: Path) -> None:
        self.folder = root / "homes"

    def path(self, job_id: str) -> Path:
        return self.folder / job_id

    def create(
        self, job_id: str, user: User, profile: AgentProfile, source: Path | None,
        resume_from: Path | None = None,
    ) -> Path:  # fmt: skip
        """A new home with what the job may have of ``source`` (the operator's dir for
        this agent), and the sessions of ``resume_from`` (an earlier job's out/<id>/)."""
        home = self.path(job_id)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh_folder(home, 0o700)  # on the job's own filesystem, bound here, or the root's
        owner = (user.uid, user.gid)
        if os.geteuid() == 0:
            os.chown(home, *owner)
        if source is not None:
            for name in profile.config_files:
                data = read_whole(source / name, MAX_SHARED_BYTES)
                if data is not None:
                    # Root's and 0444: the agent cannot change it (only replace its copy).
                    _folders_for(home, name, user)
                    write_atomic(home / name, data, mode=0o444)
        if resume_from is not None:
            _copy_session(resume_from, home, user)
        return home

    def replace_files(self, home: Path, files: Mapping[str, bytes]) -> None:
        """Put the job's own versions of copied config files (pointed at the gateway) in
        place of the operator's, as read-only as the copies."""
        for name, data in files.items():
            write_atomic(home / name, data, mode=0o444)

    def collect(self, job_id: str, profile: AgentProfile, out_dir: Path) -> None:
        """After the container exited: keep the sessions."""
        home = self.path(job_id)
        if not home.is_dir() or home.is_symlink():
            return
        target = out_dir / "sessions"
        remove_tree(target)  # the agent's own, if it made one there
        folder = out_dir.stat()  # out/<id> is the job's user's, sessions/ too
        owner = User(folder.st_uid, folder.st_gid)
        for pattern in profile.session_files:
            for found in sorted(home.glob(pattern)):
                if found.is_symlink() or not (found.is_dir() or found.is_file()):
                    continue
                relative = found.relative_to(home)  # kept: a resume puts it back there
                _folders_for(target, str(relative), owner, top=out_dir)
                move_tree(found, target / relative)  # copied when out/ is on another disk

    def remove(self, job_id: str) -> None:
        remove_tree(self.path(job_id))


def _folders_for(base: Path, relative: str, user: User, top: Path | None = None) -> None:
    """The folders between ``base`` and the file ``relative`` below it, the user's."""
    folder = (base / relative).parent
    missing = []
    while folder != (top or base).parent and not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o755)
        if os.geteuid() == 0:
            os.chown(path, user.uid, user.gid)


def _copy_session(source: Path, home: Path, user: User) -> None:
    """An earlier job's session (out/<id>/sessions/, already made safe) into a new home,
    as the job's user: regular files and folders only, nothing followed."""
    if not source.is_dir() or source.is_symlink():
        return
    target = home

    def copy_regular(src: str, dst: str) -> None:
        if os.path.islink(src) or not os.path.isfile(src):
            return
        shutil.copyfile(src, dst, follow_symlinks=False)

    def links(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if os.path.islink(os.path.join(folder, n))]

    shutil.copytree(source, target, ignore=links, copy_function=copy_regular, dirs_exist_ok=True)
    if os.geteuid() == 0:
        chown_tree(target, user)
