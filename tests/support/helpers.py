"""Shared test helpers: polling with a deadline, a daemon in a subprocess, test images."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import docker
import yaml

T = TypeVar("T")
TESTS = Path(__file__).resolve().parent.parent
CHECKOUT = TESTS.parent
BEHAVE_DIR = TESTS / "images" / "behave"


def wait_for(check: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def behave_image() -> str:
    """Build (once per content) the stand-in worker image; returns its tag."""
    digest = hashlib.sha256()
    for name in sorted(p.name for p in BEHAVE_DIR.iterdir()):
        digest.update(name.encode() + (BEHAVE_DIR / name).read_bytes())
    tag = f"watcherd-behave:{digest.hexdigest()[:12]}"
    client = docker.from_env()
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        client.images.build(path=str(BEHAVE_DIR), tag=tag, network_mode="host", rm=True)
    return tag


def files_holding(root: Path, needle: bytes) -> list[Path]:
    """Every regular file under ``root`` (what is mounted below it included) that holds
    ``needle``: read in pieces, holes skipped (a job's filesystem image, disks/<id>.img,
    is gigabytes of them around what was written)."""
    found = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink() and _holds(path, needle):
                found.append(path)
    return found


def _holds(path: Path, needle: bytes) -> bool:
    with path.open("rb") as handle:
        fd = handle.fileno()
        size, offset = os.fstat(fd).st_size, 0
        while offset < size:
            try:
                offset = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                return False
            end, tail = os.lseek(fd, offset, os.SEEK_HOLE), b""
            while offset < end:
                chunk = os.pread(fd, min(1024**2, end - offset), offset)
                if not chunk:
                    break
                if needle in tail + chunk:
                    return True
                tail, offset = chunk[-len(needle) :], offset + len(chunk)
    return False


def write_job(inbox: Path, name: str, **fields: Any) -> Path:
    """Drop a job the way a careful program does: temp name, then rename."""
    path = inbox / name
    tmp = inbox / f".{name}.tmp"
    tmp.write_text(yaml.safe_dump(fields))
    os.rename(tmp, path)
    return path


def finished_jobs(root: Path) -> dict[str, list[str]]:
    return {
        folder: sorted(p.name for p in (root / folder).glob("*.yaml"))
        for folder in ("inbox", "running", "done", "failed")
    }


def exit_record(root: Path, job_file: Path) -> dict[str, Any]:
    job_id = job_file.name.removesuffix(".yaml")
    result: dict[str, Any] = json.loads((root / "out" / job_id / "exit.json").read_text())
    return result


def job_in(root: Path, folder: str, source_name: str) -> Path | None:
    """The job file in ``folder`` that came from ``source_name`` (its exit.json says so)."""
    for path in (root / folder).glob("*.yaml"):
        out = root / "out" / path.name.removesuffix(".yaml") / "exit.json"
        if out.exists() and json.loads(out.read_text()).get("job_file") == source_name:
            return path
    return None


def wait_finished(root: Path, source_name: str, timeout: float = 60.0) -> tuple[str, Path]:
    def find() -> tuple[str, Path] | None:
        for folder in ("done", "failed"):
            path = job_in(root, folder, source_name)
            if path is not None:
                return folder, path
        return None

    return wait_for(find, timeout, f"{source_name} to finish")


class DaemonProcess:
    """``watcherd run`` in a subprocess, as a user would start it."""

    _count = 0

    def __init__(
        self, root: Path, config: dict[str, Any], env: Mapping[str, str] | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        self.root = root
        self.config = config
        self.env = dict(env or {})  # on top of this process's environment
        self.prefix = prefix  # a command the daemon runs under (unshare, setpriv, ...)
        DaemonProcess._count += 1
        name = f"watcherd-{DaemonProcess._count}"
        self.config_path = root.parent / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump({"root": str(root), **config}))
        self.log_path = root.parent / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> DaemonProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "watcherd", "--config", str(self.config_path),
             "run", "--no-build"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self._environ(),
        )  # fmt: skip
        if wait_ready:
            wait_for(lambda: "ready:" in self.log(), 60, "daemon ready")
        return self

    def _environ(self) -> dict[str, str]:
        environ = {**os.environ, **self.env}
        # This checkout's watcherd, whichever one `pip install -e` points at.
        environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(CHECKOUT), environ.get("PYTHONPATH")])
        )
        return environ

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


StartDaemon = Callable[..., DaemonProcess]


def cli(daemon: DaemonProcess, *args: str) -> list[str]:
    """A ``watcherd`` command line with this daemon's config, for subprocess."""
    return [sys.executable, "-m", "watcherd", "--config", str(daemon.config_path), *args]


def cli_environ() -> dict[str, str]:
    """This process's environment, running this checkout's watcherd."""
    path = os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}
