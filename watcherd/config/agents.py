"""The operator's settings per agent kind (config ``agents:``), and the default agent.

    agents:
      claude:
        api_key_file: /etc/watcherd/anthropic.env   # ANTHROPIC_API_KEY=... (mode 0600)
        env: {ANTHROPIC_BASE_URL: http://127.0.0.1:8080}   # a self-hosted endpoint
        image: watcherd-claude:2.1.332               # default: the profile's
        config_dir: /srv/agent-work/.claude-bot      # files copied into each job's home

Codex keeps its own top-level keys (``image``, ``auth_mode``, ``auth_dirs``,
``api_key_file``): they are its settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watcherd.agents import AGENTS

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The worker's contract and what would let a setting escape it; anything else (base URLs,
# provider config) is the operator's to set.
_RESERVED = frozenset({"PROMPT", "PROMPT_FILE", "REPO_URL", "REPO_DIR", "REPO_REF", "JOB_BRANCH",
                       "HOME", "PATH", "USER", "SHELL"})  # fmt: skip
_RESERVED_PREFIXES = ("LD_", "WATCHERD_", "AGENT_", "GIT_")


@dataclass(frozen=True)
class AgentSettings:
    image: str | None = None
    api_key_file: Path | None = None
    config_dir: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)


def parse_agent_settings(value: Any) -> dict[str, AgentSettings]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of agent names to settings")
    settings: dict[str, AgentSettings] = {}
    for name, raw in value.items():
        if name not in AGENTS:
            raise ValueError(f"unknown agent {name!r} (known: {', '.join(sorted(AGENTS))})")
        if not isinstance(raw, dict):
            raise ValueError(f"{name}: expected a mapping (image, api_key_file, config_dir, env)")
        unknown = sorted(set(raw) - {"image", "api_key_file", "config_dir", "env"})
        if unknown:
            raise ValueError(f"{name}: unknown setting(s): {', '.join(unknown)}")
        settings[name] = AgentSettings(
            image=_string(raw, "image", name),
            api_key_file=_path(raw, "api_key_file", name),
            config_dir=_path(raw, "config_dir", name),
            env=_env(raw.get("env", {}), name),
        )
    return settings


def _string(raw: dict[str, Any], key: str, agent: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{agent}.{key}: expected a string")
    return value


def _path(raw: dict[str, Any], key: str, agent: str) -> Path | None:
    value = _string(raw, key, agent)
    return Path(value).expanduser() if value else None


def _env(value: Any, agent: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"{agent}.env: expected a mapping of NAME: value")
    env = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _NAME.fullmatch(key):
            raise ValueError(f"{agent}.env: {key!r} is not a valid variable name")
        if key in _RESERVED or key.startswith(_RESERVED_PREFIXES):
            raise ValueError(f"{agent}.env: {key} is reserved")
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ValueError(f"{agent}.env: {key}: expected a string or number")
        env[key] = str(item)
    return env
