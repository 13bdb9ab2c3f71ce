"""Which environment variables a job's ``env`` and the config's ``extra_env`` may set in a
job container. One rule for both, in a module of its own so that the config and the job
parser can share it without one importing the other."""

from __future__ import annotations

import re
from typing import Any

# Variables the worker image reads or that would let a job escape its contract.
RESERVED_ENV = frozenset(
    {"REPO_URL", "PROMPT", "PROMPT_FILE", "REPO_DIR", "REPO_REF", "JOB_BRANCH", "OUT"}
    | {"HOME", "PATH", "USER", "SHELL", "TMPDIR"}
    # A proxy or a base URL would send an agent's requests, with its key, elsewhere.
    | {"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"}
    | {"NO_PROXY", "no_proxy", "CODE_ASSIST_ENDPOINT", "IS_SANDBOX"}
)
# The worker's and the agents' own variables: credentials, base URLs, homes, behaviour.
RESERVED_ENV_PREFIXES = (
    "CODEX_", "LD_", "GIT_", "WATCHERD_", "SSL_", "OPENAI_", "AGENT_",
    "ANTHROPIC_", "CLAUDE_", "DISABLE_", "GEMINI_", "GOOGLE_", "NODE_", "OPENCODE_",
)  # fmt: skip
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_reserved(name: str) -> bool:
    return name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES)


def check_env(value: Any, setter: str) -> dict[str, str]:
    """``{NAME: value}`` with valid, unreserved names and string or number values, as
    strings. Raises ValueError naming the variable; ``setter`` ("a job") says who may not."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of NAME: value, got {_kind(value)}")
    env: dict[str, str] = {}
    for name, item in value.items():
        # fullmatch, not match: "$" alone also matches before a trailing newline.
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid variable name")
        if is_reserved(name):
            raise ValueError(f"{name} is reserved and cannot be set by {setter}")
        # Booleans are refused: YAML reads 'yes' and 'on' as true, which would arrive as "True".
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ValueError(f"{name}: expected a string or number, got {_kind(item)}")
        env[name] = str(item)
    return env


def _kind(value: Any) -> str:
    return "nothing (null)" if value is None else type(value).__name__
