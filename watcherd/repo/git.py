"""Running git on the host, where a job's agent must never get to run anything.

The daemon runs git only on repositories it made and no agent can write (the cache,
the results) or on a workspace before its job starts. Even so every call turns off
what could run a command (hooks, fsmonitor, pagers, askpass prompts) and allows only
the configured transports: the upstream repository's content is untrusted too.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

# Ahead of every subcommand. Config given with -c wins over the repository's own.
SAFE_OPTIONS = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "core.pager=cat",
    "-c", "core.askPass=",
    "-c", "credential.interactive=never",
    "-c", "protocol.ext.allow=never",
    "-c", "protocol.fd.allow=never",
    "-c", "advice.detachedHead=false",
)  # fmt: skip

# Network trouble is worth another attempt; anything else git says is final.
_TRANSIENT = re.compile(
    r"could not resolve|connection (refused|reset|timed out)|timed out|failed to connect|"
    r"network is unreachable|temporary failure|early eof|the remote end hung up|"
    r"HTTP 5[0-9][0-9]|returned error: 5[0-9][0-9]",
    re.IGNORECASE,
)


class GitError(RuntimeError):
    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr

    @property
    def transient(self) -> bool:
        return bool(_TRANSIENT.search(self.stderr))

    def last_line(self) -> str:
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return lines[-1][:500] if lines else ""


def git_env(allowed_protocols: Sequence[str], **extra: str) -> dict[str, str]:
    """The environment for git: the daemon's own, less any GIT_* it had, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GIT_") and key not in ("EDITOR", "VISUAL", "PAGER")
    }
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ALLOW_PROTOCOL": ":".join(allowed_protocols),
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
            "LC_ALL": "C",
        }
    )
    env.update(extra)
    return env


def run_git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str],
    timeout: float = 600.0,
    stdin: str | None = None,
    pass_fds: Sequence[int] = (),
) -> str:
    """git's stdout, or GitError with its stderr. ``pass_fds``: descriptors git (and what
    it runs) inherits, such as the pipe a credential helper reads (watcherd/publish/)."""
    try:
        done = subprocess.run(
            ["git", *SAFE_OPTIONS, *args],
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            input=stdin.encode() if stdin is not None else None,
            stdin=subprocess.DEVNULL if stdin is None else None,
            timeout=timeout,
            check=False,
            pass_fds=tuple(pass_fds),
        )
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"git {args[0]} timed out after {timeout:.0f}s", "timed out") from exc
    stderr = done.stderr.decode("utf-8", "replace")
    if done.returncode != 0:
        raise GitError(f"git {args[0]} failed: {stderr.strip()[-500:]}", stderr)
    return str(done.stdout.decode("utf-8", "replace"))
