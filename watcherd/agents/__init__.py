"""The agents watcherd runs, by the name a job gives (``agent: codex``). Adding one means
a module with its AgentProfile, one line here, and its image stage (image/Dockerfile)."""

from __future__ import annotations

from watcherd.agents.base import AgentProfile, AgentReport, Usage
from watcherd.agents.claude import CLAUDE
from watcherd.agents.codex import CODEX
from watcherd.agents.gemini import GEMINI
from watcherd.agents.opencode import OPENCODE

AGENTS: dict[str, AgentProfile] = {p.name: p for p in (CODEX, CLAUDE, GEMINI, OPENCODE)}
DEFAULT_AGENT = "codex"

__all__ = ["AGENTS", "DEFAULT_AGENT", "AgentProfile", "AgentReport", "Usage"]
