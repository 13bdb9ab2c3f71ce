"""What a job's container looks like: hardened, with only this job's folders mounted.

``build_spec`` is pure: (config, job, user, paths) in, ContainerSpec out; only
``job_user`` looks at the disk (the work root's owner). The runner turns the spec into
Docker calls; tests read the spec and ``docker inspect`` to check the defaults.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from watcherd.agents import AGENTS
from watcherd.backends.spec import (
    JOB_LABEL,
    ROOT_LABEL,
    ContainerSpec,
    Mount,
    Tmpfs,
    container_name,
)
from watcherd.config import Config
from watcherd.job.model import RUN_TARGET, ModelAccess
from watcherd.job.spec import JobSpec
from watcherd.repo.workspace import Workspace

IMAGE_HOME = "/home/codex"
IMAGE_UID_GID = "1000:1000"  # the image's `codex` user, used when the work root is root's


def job_user(config: Config) -> str:
    """``uid:gid`` the agent runs as: configured, else the work root's owner, never root."""
    if config.job_user:
        return config.job_user
    st = os.stat(config.root)
    if st.st_uid == 0:
        return IMAGE_UID_GID
    return f"{st.st_uid}:{st.st_gid}"


def pool_constraints(config: Config, job: JobSpec) -> tuple[str, ...]:
    """The Swarm constraints of the job's pool (none without one)."""
    return tuple(config.pools.get(job.pool, ())) if job.pool else ()


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
    model: ModelAccess,
    run_dir: Path,
    resume_session: str | None = None,
    placement: tuple[str, ...] | None = None,
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
    # The operator's keys stay in the gateway: a variable that holds one (a provider's
    # key passed in extra_env, say) is dropped, then the job's wiring points the agent at
    # the gateway with its token in the key's place.
    environment = {k: v for k, v in environment.items() if v not in model.keys}
    environment.update(model.env)

    mounts = (
        Mount(workspace.path, f"/work/{job.repo_dir}"),
        Mount(out_dir, "/work/out"),
        Mount(workspace.cache_objects, workspace.cache_target, read_only=True),
        Mount(home, profile.home),
        Mount(run_dir, RUN_TARGET, read_only=True),  # its sockets: the model, its egress
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
        network_mode=config.network_mode if job.network == "open" else "none",
        mem_limit=memory,
        nano_cpus=int(cpus * 1e9),
        pids_limit=config.pids_limit,
        log_max_size=config.log_max_size,
        stop_grace=config.stop_grace,
        tmpfs=tmpfs,
        placement=placement if placement is not None else pool_constraints(config, job),
    )
