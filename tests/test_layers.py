"""The package's layers: every import runs down (or within a subpackage), never up or across.

Data flows one way (watcher wakes -> spool claims -> a job's life runs through a backend ->
spool files it -> notify tells); this reads every module's imports, lazy ones included, and
fails on the first that runs against that order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import watcherd

PACKAGE = Path(watcherd.__file__).resolve().parent

# Lower runs first. Subpackages of one rank may not import each other.
LAYERS: dict[str, int] = {
    "watcherd": 0,  # __init__: the version only
    "util": 0,
    "agents": 1,
    "repo": 1,
    "config": 2,
    "spool": 3,
    "backends": 3,
    "gateway": 1,
    "relay": 1,  # a Swarm job's sockets on every node; the gateway is handed one
    "job": 4,
    "notify": 5,  # tells the world after a job ends
    "publish": 5,  # pushes a job's branch, opens its pull request
    "triggers": 5,  # jobs that start themselves: schedules, signed inbound hooks
    "daemon": 6,
    "client": 6,  # what every front end does over a root: submit, find, view, follow, cancel
    "web": 7,  # front ends: `serve` (HTTP API, dashboard), `mcp`
    "mcp": 7,
    "cli": 8,  # the command, which starts any front end
    "__main__": 9,
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name == "watcherd" or name.startswith("watcherd.")}


def test_every_subpackage_has_a_layer() -> None:
    assert {layer_of(name) for name in modules()} - {"image_context"} <= set(LAYERS)


def test_no_import_runs_up_or_across() -> None:
    wrong = []
    for name, path in sorted(modules().items()):
        here = layer_of(name)
        for target in sorted(imported(path)):
            there = layer_of(target)
            if there != here and LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{name} imports {target} ({here} {LAYERS[here]} -> {there})")
    assert not wrong, "\n".join(wrong)


def test_the_top_level_stays_small() -> None:
    entries = [p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 20, entries
