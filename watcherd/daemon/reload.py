"""SIGHUP: read the config again and apply what is safe while jobs run.

A reloadable setting only changes what the daemon does next: how many jobs it starts,
the caps, timeouts and environment of the containers it creates, which job files it
accepts, how often it looks at the inbox. Containers already running keep what they
were started with. Everything else (the work root, the Docker Engine, the image,
credentials, logging, ...) was built into the running daemon at start: a change there
is logged as needing a restart and ignored. A config that does not load is logged and
ignored; the daemon goes on with the one it has.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from watcherd.config import Config, ConfigError

log = logging.getLogger("watcherd.reload")

# Every other setting needs a restart, including settings added to Config later: the
# safe default. Each of the config's cross-checks (retries <= max_retries, auth_mode with
# api_key_file, ...) involves settings that are all in this set or all outside it, so the
# running config with these changes applied still passes the checks the new file passed.
RELOADABLE = frozenset(
    {
        "concurrency",
        "settle_seconds",
        "rescan_seconds",
        "default_timeout",
        "max_timeout",
        "retries",
        "max_retries",
        "memory_limit",
        "cpus",
        "pids_limit",
        "network_mode",
        "allowed_repos",
        "allowed_protocols",
        "extra_env",
        "notify",  # where the next jobs to end are reported
        "notify_default",
        "publish",  # read afresh for each publish (the credential files too)
        "mcp",  # read by `watcherd mcp` when it starts, never by the daemon: nothing to restart
    }
)


@dataclass(frozen=True)
class ReloadPlan:
    config: Config  # the running config with the reloadable changes applied
    applied: tuple[str, ...]  # what changes, for the log: "concurrency 2 -> 1"
    needs_restart: tuple[str, ...]  # names of settings that changed but are not applied


def plan_reload(running: Config, loaded: Config) -> ReloadPlan:
    changed = [
        f.name
        for f in dataclasses.fields(Config)
        if getattr(running, f.name) != getattr(loaded, f.name)
    ]
    apply = {name: getattr(loaded, name) for name in changed if name in RELOADABLE}
    return ReloadPlan(
        config=running.replace(**apply),
        applied=tuple(_describe(name, getattr(running, name), new) for name, new in apply.items()),
        needs_restart=tuple(name for name in changed if name not in RELOADABLE),
    )


def reload_config(running: Config, load: Callable[[], Config] | None) -> Config:
    """The config to run with from now on: ``running`` with what is safe to change taken
    from ``load()``, or ``running`` itself if loading fails. Logs what it did."""
    if load is None:
        log.warning("config reload requested, but this daemon has no config file to re-read")
        return running
    try:
        loaded = load()
    except ConfigError as exc:
        log.error("config reload failed, keeping the running config: %s", exc)
        return running
    except Exception:  # a reload must never take the daemon down
        log.exception("config reload failed, keeping the running config")
        return running
    plan = plan_reload(running, loaded)
    for name in plan.needs_restart:
        log.warning("config reload: %s changed but needs a restart; not applied", name)
    if plan.applied:
        log.info("config reloaded: %s", "; ".join(plan.applied))
    else:
        log.info("config reloaded: no setting that can change while running has changed")
    return plan.config


def _describe(name: str, old: object, new: object) -> str:
    if isinstance(new, Mapping):  # extra_env: its values may be tokens, so only the names
        return f"{name} now sets {', '.join(sorted(new)) or 'nothing'}"
    return f"{name} {old!r} -> {new!r}"
