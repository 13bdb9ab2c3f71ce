"""What a job's container looks like: hardened, with only this job's folders mounted.

``build_spec`` is pure: (config, job, user, paths) in, ContainerSpec out; only
``job_user`` looks at the disk (the work root's owner). The runner turns the spec into
Docker calls; tests read the spec and ``docker inspect`` to check the defaults.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from watcherd.agents import AGENTS
from watcherd.config import Config
from watcherd.job import JobSpec
from watcherd.workspace import Workspace

CONTAINER_PREFIX = "watcherd-"
JOB_LABEL = "watcherd.job"
ROOT_LABEL = "watcherd.root"
IMAGE_HOME = "/home/codex"
IMAGE_UID_GID = "1000:1000"  # the image's `codex` user, used when the work root is root's


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Tmpfs:
    size: int
    mode: int
    uid: int | None = None  # the owner; a Swarm service cannot set one, so it gets the mode
    gid: int | None = None

    @property
    def options(self) -> str:
        owner = f",uid={self.uid},gid={self.gid}" if self.uid is not None else ""
        return f"rw,nosuid,nodev,mode={self.mode:o}{owner},size={self.size}"


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    user: str
    environment: Mapping[str, str]
    mounts: tuple[Mount, ...]
    labels: Mapping[str, str]
    network_mode: str
    mem_limit: int
    nano_cpus: int
    pids_limit: int
    log_max_size: int
    stop_grace: float = 30.0
    tmpfs: Mapping[str, Tmpfs] = field(default_factory=dict)
    # Credential variables, kept apart from the environment: a Swarm task gets them as
    # secret files (not in its service's spec), a local container as variables.
    secrets: Mapping[str, str] = field(default_factory=dict)
    placement: tuple[str, ...] = ()  # Swarm constraints, from the config's named pools
    read_only: bool = True
    cap_drop: tuple[str, ...] = ("ALL",)
    security_opt: tuple[str, ...] = ("no-new-privileges",)


def container_name(job_id: str) -> str:
    return f"{CONTAINER_PREFIX}{job_id}"


def job_user(config: Config) -> str:
    """``uid:gid`` the agent runs as: configured, else the work root's owner, never root."""
    if config.job_user:
        return config.job_user
    st = os.stat(config.root)
    if st.st_uid == 0:
        return IMAGE_UID_GID
    return f"{st.st_uid}:{st.st_gid}"


def build_spec(
    *,
    config: Config,
    job: JobSpec,
    job_id: str,
    attempt: int,
    user: str,
    out_dir: Path,
    workspace: Workspace,
    home: Path,
    branch: str,
    api_key: tuple[str, str] | None,
    resume_session: str | None = None,
) -> ContainerSpec:
    author, email = config.git_identity
    profile = AGENTS[job.agent]
    settings = config.agent_settings(job.agent)
    environment = {
        **config.extra_env,
        **job.env,
        **profile.fixed_env,
        **settings.env,
        "REPO_URL": job.repo_url,
        "PROMPT": job.prompt,
        "REPO_DIR": job.repo_dir,
        "JOB_BRANCH": branch,
        "AGENT_MODE": job.mode,
        "HOME": IMAGE_HOME,
        profile.home_env: profile.home_env_value or profile.home,
        "GIT_ALLOW_PROTOCOL": ":".join(config.allowed_protocols),
        # So that a plain `git commit` by the agent works, and the worker's own too.
        "GIT_AUTHOR_NAME": author,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": author,
        "GIT_COMMITTER_EMAIL": email,
        "WATCHERD_JOB_ID": job_id,
        "WATCHERD_AGENT": job.agent,
        "WATCHERD_ATTEMPT": str(attempt),
    }
    if job.repo_ref:
        environment["REPO_REF"] = job.repo_ref
    if job.flags:
        environment["AGENT_FLAGS"] = shlex.join(job.flags)
    if job.model:
        environment["AGENT_MODEL"] = job.model
    if job.max_turns:
        environment["AGENT_MAX_TURNS"] = str(job.max_turns)
    if resume_session:
        environment["AGENT_RESUME"] = resume_session
    secrets = dict([api_key]) if api_key else {}

    mounts = (
        Mount(workspace.path, f"/work/{job.repo_dir}"),
        Mount(out_dir, "/work/out"),
        Mount(workspace.cache_objects, workspace.cache_target, read_only=True),
        Mount(home, profile.home),
    )
    # HOME is a tmpfs so git and codex can write their config under a read-only root;
    # the job's own agent home is mounted over its .codex folder.
    uid, _, gid = user.partition(":")
    tmpfs = {
        "/tmp": Tmpfs(size=1024**3, mode=0o1777),
        IMAGE_HOME: Tmpfs(size=512 * 1024**2, mode=0o755, uid=int(uid), gid=int(gid)),
    }
    memory = min(job.memory or config.memory_limit, config.memory_limit)
    cpus = min(job.cpus or config.cpus, config.cpus)
    return ContainerSpec(
        name=container_name(job_id),
        image=settings.image or profile.image,
        user=user,
        environment=environment,
        mounts=mounts,
        labels={JOB_LABEL: job_id, ROOT_LABEL: str(config.root)},
        network_mode=config.network_mode,
        mem_limit=memory,
        nano_cpus=int(cpus * 1e9),
        pids_limit=config.pids_limit,
        log_max_size=config.log_max_size,
        stop_grace=config.stop_grace,
        tmpfs=tmpfs,
        secrets=secrets,
        placement=config.pools.get(job.pool, ()) if job.pool else (),
    )
