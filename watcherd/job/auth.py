"""Codex credentials: login dirs to mount, or an API key read from a private file."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from watcherd.agents import AGENTS
from watcherd.config import Config

log = logging.getLogger("watcherd.auth")

_KEY_NAMES = ("CODEX_API_KEY", "OPENAI_API_KEY")


class AuthError(ValueError):
    pass


def agent_logins(config: Config) -> dict[str, tuple[Path, ...]]:
    """For each agent whose jobs use a refreshable login (its profile declares one, and the
    config puts it in login mode), the dirs its jobs use, shared. A job of any other agent
    uses none and takes its settings from its own config dir."""
    logins = {}
    for name, profile in AGENTS.items():
        if profile.login_file and (dirs := login_dirs(config, name)):
            logins[name] = dirs
    return logins


def login_dirs(config: Config, agent: str = "codex") -> tuple[Path, ...]:
    """An agent's login dirs (empty unless it is in login mode). Creates the bot dir."""
    dirs = config.login_dirs(agent)
    for folder in dirs:
        if folder == config.bot_auth_dir:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        elif not folder.is_relative_to(config.root):
            log.warning(
                "auth dir %s is outside the work root: the daemon renews that login, and "
                "a Codex of your own that uses it finds it renewed (see README, Security "
                "model)", folder,
            )  # fmt: skip
    return dirs


def load_api_key(config: Config) -> str | None:
    """Codex's key in api_key_file, or None if not in that mode."""
    if config.auth_mode != "api_key" or config.api_key_file is None:
        return None
    return read_key_file(config.api_key_file, _KEY_NAMES)[1]


def load_api_keys(config: Config) -> dict[str, tuple[str, str]]:
    """Every agent's credential the config names: agent -> (variable, value)."""
    keys = {}
    codex = load_api_key(config)
    if codex is not None:
        keys["codex"] = ("CODEX_API_KEY", codex)
    for agent, settings in config.agents.items():
        if agent != "codex" and settings.api_key_file is not None:
            keys[agent] = read_key_file(settings.api_key_file, AGENTS[agent].key_envs)
    return keys


def read_key_file(path: Path, names: tuple[str, ...]) -> tuple[str, str]:
    """(variable, key) from a file: a bare key (for the first of ``names``), or
    NAME=value lines with one of ``names``.

    The file must be private to the service: a key anyone can read is not a secret.
    """
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
            return names[0], line
        name = name.strip().removeprefix("export ").strip()
        if name in names:
            return name, value.strip().strip("'\"")
    raise AuthError(f"api_key_file {path}: no key found (expected {names[0]}=...)")
