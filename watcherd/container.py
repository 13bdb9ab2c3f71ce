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
    tmpfs: Mapping[str, str] = field(default_factory=dict)
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
    if api_key:
        variable, key = api_key
        environment[variable] = key

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
        "/tmp": "rw,nosuid,nodev,mode=1777,size=1g",
        IMAGE_HOME: f"rw,nosuid,nodev,uid={uid},gid={gid},size=512m",
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
        tmpfs=tmpfs,
    )
