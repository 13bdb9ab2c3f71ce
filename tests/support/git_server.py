"""A git daemon on 127.0.0.1 serving test repositories; it stops by itself."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.support.helpers import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GitServer:
    def __init__(self, base: Path, lifetime: int = 3600) -> None:  # the whole suite
        self.base = base
        self.port = free_port()
        self.lifetime = lifetime
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def start(self) -> GitServer:
        self.proc = subprocess.Popen(
            ["timeout", str(self.lifetime), "git", "daemon", "--reuseaddr", "--export-all",
             "--listen=127.0.0.1", f"--port={self.port}", f"--base-path={self.base}",
             str(self.base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: _accepts(self.port), 10, "git daemon listening")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def make_repo(path: Path) -> Path:
    """A bare repository with main (README) and a feature branch, tag v1 on main."""
    work = path.with_suffix(".work")
    run = lambda *args: subprocess.run(args, cwd=work, check=True, capture_output=True)  # noqa: E731
    work.mkdir(parents=True)
    run("git", "init", "-q", "-b", "main")
    run("git", "config", "user.email", "t@example.invalid")
    run("git", "config", "user.name", "test")
    (work / "README.md").write_text("# demo\n")
    run("git", "add", ".")
    run("git", "commit", "-qm", "first")
    run("git", "tag", "v1")
    run("git", "checkout", "-qb", "feature")
    (work / "FEATURE.md").write_text("feature\n")
    run("git", "add", ".")
    run("git", "commit", "-qm", "feature")
    run("git", "checkout", "-q", "main")
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(path)], check=True)
    return path
