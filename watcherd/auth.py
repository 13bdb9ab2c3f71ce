"""Codex credentials: login dirs to mount, or an API key read from a private file."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from watcherd.config import Config

log = logging.getLogger("watcherd.auth")

_KEY_NAMES = ("CODEX_API_KEY", "OPENAI_API_KEY")


class AuthError(ValueError):
    pass


def login_dirs(config: Config) -> tuple[Path, ...]:
    """The login dirs jobs lease (empty unless auth_mode is login). Creates the bot dir."""
    if config.auth_mode != "login":
        return ()
    dirs = config.effective_auth_dirs
    for folder in dirs:
        if folder == config.bot_auth_dir:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        elif not folder.is_relative_to(config.root):
            log.warning(
                "auth dir %s is outside the work root: every job's agent can read and rewrite "
                "that login (see README, Security model)", folder,
            )  # fmt: skip
    return dirs


def load_api_key(config: Config) -> str | None:
    """The key in api_key_file (a bare key, or KEY=value lines), or None if not in that mode.

    The file must be private to the service: a key anyone can read is not a secret.
    """
    if config.auth_mode != "api_key" or config.api_key_file is None:
        return None
    path = config.api_key_file
    try:
        st = os.stat(path)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthError(f"api_key_file {path}: cannot read: {exc.strerror}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuthError(f"api_key_file {path}: readable by others; chmod 600 it")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            return line
        if name.strip().removeprefix("export ").strip() in _KEY_NAMES:
            return value.strip().strip("'\"")
    raise AuthError(f"api_key_file {path}: no key found (expected CODEX_API_KEY=...)")
