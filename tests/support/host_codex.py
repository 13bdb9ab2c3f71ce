"""The real Codex CLI as an agent host on this machine, not in a job: the very binary the
worker image pins (watcherd-codex:0.171.0, /opt/codex/bin/codex: one static executable),
copied out of that image. So the host runs the same pinned version with nothing fetched
again, and the MCP servers it starts (``python -m watcherd mcp``) run here, with this
checkout and its dependencies, as they would for a person's own Codex."""

from __future__ import annotations

import os
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import docker

from watcherd.config import DEFAULT_IMAGE

BINARY = "/opt/codex/bin/codex"


def copy_codex_out(client: docker.DockerClient, folder: Path, image: str = DEFAULT_IMAGE) -> Path:
    """``folder/codex``, copied from ``image`` (which .ci/run builds)."""
    container = client.containers.create(image, entrypoint=["true"])
    try:
        stream, _ = container.get_archive(BINARY)
        with tempfile.TemporaryFile(dir=folder) as tar:
            for chunk in stream:
                tar.write(chunk)
            tar.seek(0)
            with tarfile.open(fileobj=tar) as archive:
                member = archive.getmember("codex")
                archive.extract(member, folder, filter="data")
    finally:
        container.remove(force=True)
    codex = folder / "codex"
    codex.chmod(0o755)
    return codex


def run_codex(
    codex: Path, home: Path, workdir: Path, prompt: str, env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (), timeout: float = 240,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``codex exec`` headless, with ``home`` as its CODEX_HOME (its config.toml there); the
    JSON events on stdout, the last message in ``home/last-message.md``."""
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CODEX_HOME": str(home),
        "SCRIPTED_API_KEY": "test-key",
        **(env or {}),
    }
    return subprocess.run(
        [str(codex), "exec", "--json", "--skip-git-repo-check", "--color", "never",
         "--dangerously-bypass-approvals-and-sandbox", "-C", str(workdir),
         "--output-last-message", str(home / "last-message.md"), *extra, prompt],
        env=environ, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip
