"""``watcherd doctor``: what this machine lacks to run jobs, one line per check, each
failure with how to fix it. Exit 0 when every check passes, 1 otherwise.

The checks are plain functions of the config, an Engine (the Docker calls, a fake in the
tests) and the time, so each one is tested without a machine that lacks it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from watcherd.config import Config
from watcherd.config.notify import WebhookTarget
from watcherd.job.auth import AuthError, load_api_key
from watcherd.notify.deliver import DeliveryFailed, read_secret
from watcherd.relay.credential import CredentialError, client_context
from watcherd.spool.folders import Layout
from watcherd.util.fsutil import free_bytes

# This code was written after this date: a clock before it is wrong (TLS certificates
# would look not yet valid, job ids and timeouts would lie). A newer worker image on
# this machine moves the floor up to when that image was built.
CLOCK_FLOOR = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False  # works, but weaker than the defaults: said, not failed


class Engine(Protocol):
    def ping(self) -> str: ...  # the Engine's version; raises if unreachable
    def live_restore(self) -> bool: ...
    def image_created(self, name: str) -> datetime | None: ...  # None: not on this Engine
    def swarm_manager(self) -> bool: ...
    # A host file as the Engine's bind mounts see it (None: no such file there).
    def read_mounted(self, folder: Path, name: str, image: str) -> bytes | None: ...


class DockerEngine:
    def __init__(self, docker_host: str | None) -> None:
        import docker  # only doctor and run need the Docker SDK

        self._docker_host = docker_host
        self._client: Any = (
            docker.DockerClient(base_url=docker_host, timeout=10)
            if docker_host
            else docker.from_env(timeout=10)
        )

    def ping(self) -> str:
        self._client.ping()
        return str(self._client.version().get("Version", "?"))

    def live_restore(self) -> bool:
        return bool(self._client.info().get("LiveRestoreEnabled"))

    def read_mounted(self, folder: Path, name: str, image: str) -> bytes | None:
        from watcherd.backends.dockerapi import DockerAPI

        return DockerAPI(self._docker_host, api_timeout=30).read_mounted(folder, name, image)

    def swarm_manager(self) -> bool:
        swarm = self._client.info().get("Swarm") or {}
        return swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))

    def image_created(self, name: str) -> datetime | None:
        import docker.errors

        try:
            created = str(self._client.images.get(name).attrs.get("Created", ""))
        except docker.errors.ImageNotFound:
            return None
        return _parse_time(created) or datetime.min.replace(tzinfo=UTC)


def _parse_time(text: str) -> datetime | None:
    """Docker's RFC 3339 times have nanoseconds; Python takes microseconds."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", text)
    if not match:
        return None
    fraction = (match.group(2) or ".0")[:7]
    zone = match.group(3) or "Z"
    return datetime.fromisoformat(match.group(1) + fraction + zone.replace("Z", "+00:00"))


def run_checks(
    config: Config,
    engine_factory: Callable[[], Engine],
    now: datetime,
    dockerfile: Path | None,
) -> list[Check]:
    checks: list[Check] = []
    engine: Engine | None = None
    host = config.docker_host or os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        engine = engine_factory()
        version = engine.ping()
        checks.append(Check("engine", True, f"Docker Engine {version} reachable at {host}"))
    except Exception as exc:
        checks.append(
            Check(
                "engine",
                False,
                f"cannot reach the Docker Engine at {host}: {_short(exc)}",
                "start dockerd (systemctl start docker), or set "
                "docker_host in the config / DOCKER_HOST",
            )
        )
        engine = None
    worker_created: datetime | None = None
    if engine is None:
        for name in ("live-restore", "worker image", "base image"):
            checks.append(Check(name, False, "not checked: no Docker Engine", "see engine above"))
    else:
        checks.append(_swarm(engine) if config.backend == "swarm" else _live_restore(engine))
        worker_created = engine.image_created(config.image)
        checks.append(_worker_image(config, worker_created))
        checks += _base_images(engine, dockerfile, worker_created is not None)
    checks.append(_auth(config))
    checks += _containment(config)
    if config.backend == "swarm":
        checks.append(_relays(config))
    checks.append(_root_writable(config.root))
    checks.append(_free_disk(config))
    checks.append(_disk_bound(config, engine, worker_created is not None))
    checks.append(_clock(now, worker_created))
    checks.append(_inbox(config.root))
    checks += _notify_secrets(config)
    checks += _forge_credentials(config)
    return checks


def _swarm(engine: Engine) -> Check:
    if engine.swarm_manager():
        return Check("swarm", True, "backend swarm: this Engine is a Swarm manager")
    return Check(
        "swarm",
        False,
        "backend swarm: this Engine is not a Swarm manager (jobs wait in the inbox)",
        "docker swarm init (README, Swarm), or set docker_host to a manager",
    )


def _relays(config: Config) -> Check:
    """Whether a Swarm job reaches its model on a node other than the daemon's."""
    settings = config.relay
    if settings.listen is None:
        return Check(
            "relays", True, "relay.listen is not set: a job's task that Swarm places on "
            "another node is rejected there (its sockets' folder is served on this node "
            "only); fine on a one-node swarm", "relay.listen, and `watcherd relay` on "
            "every other node (README, Swarm, Relays)", warning=True,
        )  # fmt: skip
    credential = settings.credential_in(Layout(config.root).state)
    if credential.exists():
        try:
            client_context(credential)
        except CredentialError as exc:
            return Check("relays", False, str(exc), "chmod 600, or remove it: the daemon "
                         "makes a new one (then copy it to every node again)")  # fmt: skip
    host, port = settings.listen
    return Check(
        "relays", True, f"relays connect to {host}:{port} with {credential} (made at the "
        "daemon's first start); every other node runs `watcherd relay` with a copy",
    )  # fmt: skip


def _live_restore(engine: Engine) -> Check:
    if engine.live_restore():
        return Check("live-restore", True, "on: restarting dockerd leaves jobs running")
    return Check(
        "live-restore",
        False,
        "off: restarting dockerd kills running jobs (they are run again, within their retries)",
        'add "live-restore": true to /etc/docker/daemon.json, then systemctl reload docker',
    )


def _worker_image(config: Config, created: datetime | None) -> Check:
    if created is None:
        return Check(
            "worker image",
            False,
            f"{config.image} is not on this Engine",
            "watcherd image build (run builds it too, slowly, at its first start)",
        )
    return Check("worker image", True, f"{config.image} (built {created:%Y-%m-%d %H:%M} UTC)")


def base_images(dockerfile: Path) -> list[str]:
    """The images a Dockerfile builds FROM (ARG defaults filled in), stages excluded."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    found: list[str] = []
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].upper() == "ARG" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            args.setdefault(name, value)
        elif len(words) >= 2 and words[0].upper() == "FROM":
            named = len(words) >= 4 and words[-2].upper() == "AS"
            source = words[-3] if named else words[1]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), source)
            if named:
                stages.add(words[-1])
            if image and image not in stages and image != "scratch" and image not in found:
                found.append(image)
    return found


def _base_images(engine: Engine, dockerfile: Path | None, have_worker: bool) -> list[Check]:
    if dockerfile is None or not dockerfile.is_file():
        return [
            Check(
                "base image",
                have_worker,
                "no Dockerfile found to read it from",
                "set image_dir in the config",
            )
        ]
    checks = []
    for image in base_images(dockerfile):
        if engine.image_created(image) is not None:
            checks.append(Check("base image", True, f"{image} present"))
        elif have_worker:
            checks.append(
                Check(
                    "base image",
                    True,
                    f"{image} absent; needed only to build the worker image again",
                )
            )
        else:
            checks.append(
                Check(
                    "base image",
                    False,
                    f"{image} is not on this Engine",
                    f"docker pull {image} (offline: bash .ci/base-image)",
                )
            )
    return checks


def _auth(config: Config) -> Check:
    if config.auth_mode == "none":
        return Check("login", True, "auth_mode none: jobs get no Codex credentials")
    if config.auth_mode == "api_key":
        path = config.api_key_file
        try:
            load_api_key(config)
        except AuthError as exc:
            return Check(
                "api key",
                False,
                str(exc),
                f"put CODEX_API_KEY=... in {path}, then chmod 600 {path}",
            )
        return Check("api key", True, f"{path} readable, mode 0600, holds a key")
    missing = []
    for folder in config.effective_auth_dirs:
        auth = folder / "auth.json"
        try:
            if not stat.S_ISREG(os.stat(auth).st_mode):
                missing.append(f"{auth} is not a file")
        except PermissionError:
            missing.append(f"{auth} cannot be read by this user")
        except OSError:
            missing.append(f"no {auth}")
    if missing:
        return Check(
            "login",
            False,
            "; ".join(missing),
            "watcherd login (as the daemon's user), or auth_mode: api_key",
        )
    count = len(config.effective_auth_dirs)
    return Check("login", True, f"Codex login in {count} login dir(s), kept by the daemon (a "
                 "job gets a stand-in; the gateway adds the token)")  # fmt: skip


def _containment(config: Config) -> list[Check]:
    """What of a job's containment the config gives up (README, Security model)."""
    checks = []
    if config.allow_open_network:
        network = config.network_mode
        checks.append(Check(
            "network", True, f"jobs may ask for network: open and get {network}: such a job "
            "reaches whatever the host can" + (" (its loopback included)" if network == "host"
                                               else ""),
            "allow_open_network: false (egress allowlists instead)", warning=True,
        ))  # fmt: skip
    else:
        checks.append(
            Check(
                "network",
                True,
                "jobs have no network of their own; their model "
                f"through the gateway, egress by name ({len(config.egress)} lists)",
            )
        )
    if config.allow_network_tools:
        checks.append(Check(
            "network tools", True, "jobs may ask the provider to search or fetch the web",
            "allow_network_tools: false", warning=True,
        ))  # fmt: skip
    return checks


def _root_writable(root: Path) -> Check:
    if not root.is_dir():
        return Check("root", False, f"{root} does not exist", f"install -d {root}")
    probe = root / f".doctor-{secrets.token_hex(4)}"
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        return Check(
            "root",
            False,
            f"{root} is not writable here: {exc.strerror}",
            "run as the daemon's user, or fix the owner of the root",
        )
    with contextlib.suppress(OSError):
        probe.unlink()
    return Check("root", True, f"{root} is writable")


def _free_disk(config: Config) -> Check:
    if not config.root.is_dir():
        return Check("disk", False, f"{config.root} does not exist", f"install -d {config.root}")
    free = free_bytes(config.root)
    detail = f"{_gib(free)} free under {config.root} (min_free_disk {_gib(config.min_free_disk)})"
    if free < config.min_free_disk:
        return Check(
            "disk",
            False,
            detail + ": nothing is claimed below it",
            "free space (old out/ and workspaces/), or lower min_free_disk",
        )
    return Check("disk", True, detail)


DISK_BOUND_FIX = (
    "run the daemon as root on the host itself (not in a container, nor in a systemd "
    "sandbox of its own mount namespace: systemd/disk-bound.conf), with /dev/loop-control "
    "and mke2fs (README, Running jobs)"
)


def _disk_bound(config: Config, engine: Engine | None, have_image: bool) -> Check:
    """Whether each job's disk budget can be a filesystem of its own here: one is made,
    mounted, and read back through the Engine (watcherd/job/disk.py)."""
    from watcherd.job.disk import JobDisks

    if config.disk_bound == "poll":
        return Check("disk bound", True, "polled (disk_bound: poll): a job can write past its "
                     "budget between two measurements", "disk_bound: auto",
                     warning=True)  # fmt: skip
    if engine is None or not have_image:
        what = "no Docker Engine" if engine is None else f"no {config.image} to look through"
        return Check("disk bound", config.disk_bound != "require", f"not checked: {what}",
                     "see above", warning=True)  # fmt: skip
    why = JobDisks(config.root).probe(
        lambda folder, name: engine.read_mounted(folder, name, config.image)
    )
    if not why:
        where = " (on Swarm: tasks kept on this node)" if config.backend == "swarm" else ""
        return Check("disk bound", True, "each job's budget is a filesystem of that size "
                     f"(ext4 on a loop device): no job can write past it{where}")  # fmt: skip
    if config.disk_bound == "require":
        return Check("disk bound", False, f"disk_bound is require, and {why}: the daemon "
                     "will not start", DISK_BOUND_FIX)  # fmt: skip
    return Check("disk bound", True, f"polled: {why}; a job can write past its budget "
                 "between two measurements", DISK_BOUND_FIX, warning=True)  # fmt: skip


def _clock(now: datetime, worker_built: datetime | None) -> Check:
    floor, what = CLOCK_FLOOR, "this watcherd's release"
    if worker_built is not None and worker_built > floor:
        floor, what = worker_built, "the worker image's build"
    if now < floor:
        return Check(
            "clock",
            False,
            f"{now:%Y-%m-%d %H:%M} UTC is before {what} ({floor:%Y-%m-%d %H:%M})",
            "set the clock (timedatectl set-ntp true)",
        )
    return Check("clock", True, f"{now:%Y-%m-%d %H:%M} UTC")


def _inbox(root: Path) -> Check:
    inbox = Layout(root).inbox
    if inbox.is_dir():
        return Check("inbox", True, f"{inbox} exists")
    return Check(
        "inbox",
        False,
        f"{inbox} does not exist",
        "watcherd run makes it at its start; or install -d it",
    )


def _notify_secrets(config: Config) -> list[Check]:
    checks = []
    for target in config.notify.values():
        if not isinstance(target, WebhookTarget):
            continue
        try:
            read_secret(target.secret_file)
        except DeliveryFailed as exc:
            checks.append(
                Check(
                    f"notify {target.name}",
                    False,
                    str(exc),
                    f"write the secret into it, chmod 600 {target.secret_file}",
                )
            )
        else:
            checks.append(Check(f"notify {target.name}", True, "secret_file readable and private"))
    return checks


def _forge_credentials(config: Config) -> list[Check]:
    """Each forge's credential file is there, a regular file, private (README, Publishing).
    Its content is not shown, and a token is not tried against the forge."""
    from watcherd.publish.credentials import CredentialError, read_private_file

    checks = []
    for host, forge in sorted(config.publish.forges.items()):
        path, what = (forge.token_file, "token_file") if forge.token_file else (
            forge.app_key_file, "app_key_file")  # fmt: skip
        assert path is not None
        try:
            if not read_private_file(path, what).strip():
                raise CredentialError(f"{what} {path} is empty")
        except CredentialError as exc:
            checks.append(Check(f"publish {host}", False, str(exc),
                                f"put the credential in it, chmod 600 {path}"))  # fmt: skip
        else:
            checks.append(Check(f"publish {host}", True, f"{what} readable and private"))
    return checks


def format_checks(checks: list[Check]) -> list[str]:
    width = max((len(check.name) for check in checks), default=0)
    lines = []
    for check in checks:
        mark = ("WARN" if check.warning else "ok  ") if check.ok else "FAIL"
        line = f"{mark}  {check.name.ljust(width)}  {check.detail}"
        if (check.warning or not check.ok) and check.fix:
            line += f"; fix: {check.fix}"
        lines.append(line)
    return lines


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__
