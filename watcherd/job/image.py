"""The worker image: build it from image/ (with extra CA certificates), log Codex in."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import docker
import docker.errors

from watcherd.agents import AGENTS
from watcherd.config import Config
from watcherd.job.auth import login_dirs
from watcherd.job.container import IMAGE_HOME, job_user

log = logging.getLogger("watcherd.image")

# The worker image's build context: inside the package when installed from a wheel (the
# wheel maps image/ to watcherd/image_context, see pyproject.toml), else the top-level
# image/ folder of a checkout or an editable install.
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_PACKAGED_IMAGE_DIR = _PACKAGE_DIR / "image_context"
REPO_IMAGE_DIR = (
    _PACKAGED_IMAGE_DIR if _PACKAGED_IMAGE_DIR.is_dir() else _PACKAGE_DIR.parent / "image"
)


class ImageError(RuntimeError):
    pass


def image_dir(config: Config) -> Path:
    folder = config.image_dir or REPO_IMAGE_DIR
    if not (folder / "Dockerfile").is_file():
        raise ImageError(f"no Dockerfile in {folder}; set image_dir in the config")
    return folder


def ensure_image(config: Config) -> None:
    """Build the default agent's image if the Engine does not have it (``watcherd run``);
    other agents' images are built with ``watcherd image build AGENT``."""
    client = _client(config)
    image = agent_image(config, config.default_agent)
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        log.info("image %s not found; building it (first run only)", image)
        build_image(config, agent=config.default_agent)
    except docker.errors.DockerException as exc:
        log.warning("could not check for image %s: %s", image, exc)


def agent_image(config: Config, agent: str) -> str:
    return config.agent_settings(agent).image or AGENTS[agent].image


def build_image(
    config: Config, ca_certs: Sequence[Path] = (), tag: str | None = None, agent: str = "codex"
) -> None:
    """Build the agent's stage with --network host, adding ``ca_certs`` (and the config's)
    to certs/."""
    if agent not in AGENTS:
        raise ImageError(f"no agent {agent!r} (one of {', '.join(sorted(AGENTS))})")
    tag = tag or agent_image(config, agent)
    with tempfile.TemporaryDirectory(prefix="watcherd-image-") as tmp:
        context = Path(tmp) / "context"
        shutil.copytree(image_dir(config), context, symlinks=False)
        certs = context / "certs"
        certs.mkdir(exist_ok=True)
        for cert in (*config.ca_certs, *ca_certs):
            if not cert.is_file():
                raise ImageError(f"CA certificate {cert} not found")
            shutil.copyfile(cert, certs / f"{cert.stem}.crt")
        log.info("building %s from %s", tag, context)
        client = _client(config)
        try:
            stream = client.api.build(
                path=str(context),
                tag=tag,
                target=agent,
                network_mode="host",
                rm=True,
                forcerm=True,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk:
                    raise ImageError(f"building {tag} failed: {chunk['error'].strip()}")
                line = str(chunk.get("stream", "")).rstrip()
                if line:
                    print(line, file=sys.stderr)
        except docker.errors.DockerException as exc:
            raise ImageError(f"building {tag} failed: {exc}") from exc


def login(config: Config, with_api_key: bool) -> int:
    """``codex login`` inside the image, with the bot auth dir mounted. Needs the docker CLI
    for an interactive terminal."""
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        print("watcherd: the docker command is needed for login", file=sys.stderr)
        return 1
    dirs = login_dirs(config.replace(auth_mode="login"))
    auth_dir = dirs[0]
    uid, gid = (int(part) for part in job_user(config).split(":"))
    if os.geteuid() == 0:
        os.chown(auth_dir, uid, gid)
    command = [
        docker_cli, "run", "--rm", "-i", "--user", f"{uid}:{gid}",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-v", f"{auth_dir}:{IMAGE_HOME}/.codex",
        "--entrypoint", "codex", config.image, "login",
    ]  # fmt: skip
    if with_api_key:
        command.append("--with-api-key")
    else:
        command.insert(3, "-t")
        command.append("--device-auth")
    if config.docker_host:
        command.insert(1, f"--host={config.docker_host}")
    print(f"logging Codex in; the login is kept in {auth_dir}", file=sys.stderr)
    return subprocess.call(command)


def _client(config: Config) -> docker.DockerClient:
    try:
        if config.docker_host:
            return docker.DockerClient(base_url=config.docker_host)
        return docker.from_env()
    except docker.errors.DockerException as exc:
        raise ImageError(f"Docker Engine unreachable: {exc}") from exc
