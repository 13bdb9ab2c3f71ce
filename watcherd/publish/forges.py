"""Every kind of forge the daemon can publish to, registered here and only here, by the
``type`` the config gives a forge (config/publish.py's FORGE_TYPES names the same ones)."""

from __future__ import annotations

from watcherd.publish.forge import ForgeFactory
from watcherd.publish.github import GitHub

FORGES: dict[str, ForgeFactory] = {
    "github": GitHub,  # and GitHub Enterprise, by its api_url
}
