"""``watcherd skill install``: copy the AgentSkills skill (skills/watcherd/) where an agent host
loads skills: OpenClaw's ~/.openclaw/skills/ by default, or any other skills folder
(Claude Code's ~/.claude/skills/, Codex's ~/.codex/skills/, a workspace's skills/).

The skill ships in the wheel as the data package watcherd.skills (pyproject.toml maps the
top-level skills/ folder to it), and is the top-level skills/ folder itself in a checkout.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

SKILL_NAME = "watcherd"
DEFAULT_SKILLS_DIR = Path("~/.openclaw/skills")

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_PACKAGED = _PACKAGE_DIR / "skills" / SKILL_NAME
SKILL_DIR = _PACKAGED if _PACKAGED.is_dir() else _PACKAGE_DIR.parent / "skills" / SKILL_NAME


class SkillError(RuntimeError):
    pass


def skill_target(skills_dir: Path | None) -> Path:
    """Where the skill goes: ``DIR/watcherd/``, or DIR itself when it is named watcherd
    (a skill's folder is named as the skill)."""
    folder = (skills_dir or DEFAULT_SKILLS_DIR).expanduser().absolute()
    return folder if folder.name == SKILL_NAME else folder / SKILL_NAME


def install_skill(skills_dir: Path | None = None, source: Path = SKILL_DIR) -> Path:
    """Copy the skill's files into its folder under ``skills_dir`` (made if missing; an
    earlier copy is replaced file by file, each file atomically); returns that folder."""
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else []
    if not any(p.name == "SKILL.md" for p in files):
        raise SkillError(f"no skill in {source} (this install of watcherd lacks its skills/)")
    target = skill_target(skills_dir)
    try:
        for path in files:
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
            try:
                with os.fdopen(fd, "wb") as handle, path.open("rb") as original:
                    shutil.copyfileobj(original, handle)
                os.chmod(tmp, 0o644)
                os.replace(tmp, destination)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except OSError as exc:
        raise SkillError(f"cannot install into {target}: {exc.strerror or exc}") from exc
    return target
