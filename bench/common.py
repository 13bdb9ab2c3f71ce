"""What the benchmark sections share: work roots, the daemon in a subprocess, a local
upstream repository, the hardened container flags, clean-up, /proc readings."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.types
import yaml

from watcherd.agents import AGENTS
from watcherd.backends.spec import ContainerSpec
from watcherd.config import Config
from watcherd.gateway.grants import new_token
from watcherd.job.container import build_spec
from watcherd.job.model import wire_model
from watcherd.job.spec import parse_job
from watcherd.repo.workspace import Workspace
from watcherd.util import loopfs

CHECKOUT = Path(__file__).resolve().parent.parent
BENCH_CACHE = Path("/var/tmp/watcherd-bench")  # kept between runs (the large repository)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
T = TypeVar("T")
# --profile DIR: every daemon (and fake-runner server) is sampled by py-spy into DIR.
PROFILE: dict[str, Path] = {}
PY_SPY_PATHS = ("py-spy", "/tmp/benchtools/bin/py-spy")


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def wait_for(check: Callable[[], T], timeout: float, what: str, delay: float = 0.01) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)


# -- places --------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A folder for one section, removed afterwards (not under /tmp: dockerd must see it
    whatever the caller's mount namespace)."""
    BENCH_CACHE.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=BENCH_CACHE))
    try:
        yield path
    finally:
        release_mounts(path)
        shutil.rmtree(path, ignore_errors=True)


def release_mounts(folder: Path) -> None:
    """The job filesystems a daemon left mounted below ``folder`` (its kept workspaces),
    unmounted: their loop devices free themselves, and the folder can go."""
    for mount in loopfs.mounts_below(folder):
        with contextlib.suppress(OSError):
            loopfs.unmount(mount.target)


def make_root(base: Path, name: str = "work") -> Path:
    """A work root with every folder the daemon would make, made now so that inotify can
    watch them before the daemon starts (same modes as the daemon's own mkdirs)."""
    root = base / name
    root.mkdir()
    for folder in ("inbox", "running", "done", "failed", "out", "repos", "cache"):
        (root / folder).mkdir()
    (root / "workspaces").mkdir(mode=0o755)
    for folder in ("state", "homes"):
        (root / folder).mkdir(mode=0o700)
    return root


def make_upstream(base: Path) -> str:
    """A local bare repository with one commit; its file:// URL."""
    work = base / "upstream.work"
    bare = base / "upstream.git"
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "b@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "b@example.invalid",
    }

    def git(*args: str, cwd: Path | None = work) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (work / "README.md").write_text("# bench\n")
    git("add", ".")
    git("commit", "-qm", "first")
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=None)
    git("push", "-q", str(bare), "main")
    return f"file://{bare}"


def job_bytes(repo_url: str, prompt: str = "succeed") -> bytes:
    return yaml.safe_dump({"repo_url": repo_url, "prompt": prompt}).encode()


def drop(inbox: Path, name: str, data: bytes) -> int:
    """Drop a job as the README says programs should (dot-name, then rename); returns
    the wall-clock ns right after the rename."""
    tmp = inbox / f".{name}.tmp"
    tmp.write_bytes(data)
    os.rename(tmp, inbox / name)
    return time.time_ns()


def daemon_config(root: Path, image: str, **overrides: Any) -> dict[str, Any]:
    """The daemon's production defaults, but for the stand-in image, no network, no login
    and file:// fetches (as tests/conftest.py's daemon_config)."""
    return {
        "root": str(root),
        "image": image,
        "auth_mode": "none",
        "network_mode": "none",
        "allowed_protocols": ["file"],
        **overrides,
    }


# -- the daemon ----------------------------------------------------------------------------


class Daemon:
    """``python -m watcherd.cli --config FILE run --no-build`` from this checkout, as
    tests/support/helpers.py DaemonProcess starts it."""

    def __init__(self, base: Path, config: Mapping[str, Any], name: str = "daemon") -> None:
        self.config_path = base / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(dict(config)))
        self.log_path = base / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.profiler: subprocess.Popen[bytes] | None = None
        self.started_ns = 0

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "watcherd",
            "--config",
            str(self.config_path),
            "run",
            "--no-build",
        ]

    def start(self, wait_ready: bool = True, prefix: tuple[str, ...] = ()) -> Daemon:
        env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
        with self.log_path.open("ab") as out:
            self.started_ns = time.time_ns()
            self.proc = subprocess.Popen(
                [*prefix, *self.command()],
                cwd=CHECKOUT,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.profiler = profile(self.proc.pid, self.log_path.stem)
        if wait_ready:
            wait_for(self.ready, 60, "the daemon to be ready", 0.02)
        return self

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited early:\n{self.log()[-2000:]}")
        return "ready:" in self.log()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        reap(self.proc, 30, then_kill_for=10)
        stop_profile(self.profiler)


def reap(proc: subprocess.Popen[bytes], grace: float, then_kill_for: float = 5) -> None:
    """Wait ``grace`` seconds for a process asked to end, then kill it and wait again."""
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(then_kill_for)


def profile(pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """py-spy sampling ``pid`` (its Python threads, on CPU only) until it exits, into
    PROFILE["dir"]/<name>-<pid>.txt as collapsed stacks (flamegraph.pl or speedscope read
    them); nothing without --profile."""
    folder = PROFILE.get("dir")
    if folder is None:
        return None
    py_spy = next((p for p in PY_SPY_PATHS if shutil.which(p)), None)
    if py_spy is None:
        raise RuntimeError("--profile needs py-spy (pip install --target /tmp/benchtools py-spy)")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}-{pid}.txt"
    log(f"profiling pid {pid} into {out}")
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--threads",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": ""},
    )


def stop_profile(profiler: subprocess.Popen[bytes] | None) -> None:
    """py-spy writes its file when its target exits."""
    if profiler is not None:
        try:
            profiler.wait(30)
        except subprocess.TimeoutExpired:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)


# -- /proc -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """CPU seconds of a process (its threads) and of its waited-for children (git)."""

    cpu: float
    children_cpu: float
    rss_mb: float
    hwm_mb: float

    @classmethod
    def read(cls, pid: int) -> ProcStat:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # after the comm: state=0 ... utime=11 stime=12 cutime=13 cstime=14
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        status = Path(f"/proc/{pid}/status").read_text()
        return cls(
            cpu=(utime + stime) / CLK_TCK,
            children_cpu=(cutime + cstime) / CLK_TCK,
            rss_mb=_status_kb(status, "VmRSS") / 1024,
            hwm_mb=_status_kb(status, "VmHWM") / 1024,
        )


def _status_kb(status: str, key: str) -> int:
    for line in status.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


# -- containers ------------------------------------------------------------------------------


def client() -> docker.DockerClient:
    return docker.from_env(timeout=120)


def remove_containers(docker_client: docker.DockerClient, root: Path) -> int:
    """Every container labelled with this work root, whatever its state."""
    removed = 0
    for container in docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"watcherd.root={root}"}
    ):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
            removed += 1
    return removed


@dataclass(frozen=True)
class FloorJob:
    spec: ContainerSpec
    out_dir: Path


def floor_jobs(base: Path, root: Path, image: str, count: int, prefix: str) -> list[FloorJob]:
    """Container specs made by the daemon's own build_spec (same image, user, env, mounts,
    limits and hardening as its jobs), labelled with ``root`` for clean-up; each with its
    own out/ folder, owned by the job's user as the daemon makes it."""
    config = Config(
        root=root, image=image, auth_mode="none", network_mode="none", allowed_protocols=("file",)
    )
    shared = base / f"{prefix}-shared"
    for folder in ("workspace", "cache/objects", "home"):
        (shared / folder).mkdir(parents=True, exist_ok=True)
    os.chown(shared / "workspace", 1000, 1000)
    os.chown(shared / "home", 1000, 1000)
    workspace = Workspace(shared / "workspace", shared / "cache/objects", "/cache/x.git/objects")
    job = parse_job(job_bytes("file:///nowhere/bench.git"), config)
    run_dir = shared / "run"  # the job's gateway sockets (none are served for a floor)
    run_dir.mkdir(exist_ok=True)
    jobs = []
    for n in range(count):
        job_id = f"20260101T000000Z-{prefix}{n}-{os.urandom(3).hex()}"
        out_dir = base / f"{prefix}-out" / job_id
        out_dir.mkdir(parents=True)
        os.chown(out_dir, 1000, 1000)
        spec = build_spec(
            config=config,
            job=job,
            job_id=job_id,
            attempt=1,
            user="1000:1000",
            out_dir=out_dir,
            workspace=workspace,
            home=shared / "home",
            branch=f"watcherd/{job_id}",
            # as the daemon wires a job with auth_mode none (watcherd/job/life.py)
            model=wire_model(config, job, AGENTS[job.agent], None, new_token(), None, False),
            run_dir=run_dir,
        )
        jobs.append(FloorJob(spec, out_dir))
    return jobs


def create_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """What watcherd/backends/local.py LocalRunner.start passes to containers.create, from the
    same spec (tests/test_bench.py checks the two stay the same)."""
    return {
        "image": spec.image,
        "name": spec.name,
        "user": spec.user,
        "environment": dict(spec.environment),
        "labels": dict(spec.labels),
        "mounts": [
            docker.types.Mount(m.target, str(m.source), type="bind", read_only=m.read_only)
            for m in spec.mounts
        ],
        "tmpfs": {target: tmpfs.options for target, tmpfs in spec.tmpfs.items()},
        "network_mode": spec.network_mode,
        "mem_limit": spec.mem_limit,
        "memswap_limit": spec.mem_limit,
        "nano_cpus": spec.nano_cpus,
        "pids_limit": spec.pids_limit,
        "log_config": docker.types.LogConfig(
            type="json-file", config={"max-size": str(spec.log_max_size), "max-file": "2"}
        ),
        "read_only": spec.read_only,
        "cap_drop": list(spec.cap_drop),
        "security_opt": list(spec.security_opt),
        "privileged": False,
        "init": True,
        "stdin_open": False,
        "tty": False,
        "detach": True,
    }


def docker_run_args(spec: ContainerSpec) -> list[str]:
    """The same container as ``docker run --rm`` arguments."""
    args = [
        "run",
        "--rm",
        "--name",
        spec.name,
        "--user",
        spec.user,
        "--network",
        spec.network_mode,
        "--memory",
        str(spec.mem_limit),
        "--memory-swap",
        str(spec.mem_limit),
        "--cpus",
        f"{spec.nano_cpus / 1e9:g}",
        "--pids-limit",
        str(spec.pids_limit),
        "--log-driver",
        "json-file",
        "--log-opt",
        f"max-size={spec.log_max_size}",
        "--log-opt",
        "max-file=2",
        "--init",
    ]
    if spec.read_only:
        args.append("--read-only")
    for cap in spec.cap_drop:
        args += ["--cap-drop", cap]
    for opt in spec.security_opt:
        args += ["--security-opt", opt]
    for target, tmpfs in spec.tmpfs.items():
        args += ["--tmpfs", f"{target}:{tmpfs.options}"]
    for key, value in spec.labels.items():
        args += ["--label", f"{key}={value}"]
    for key, value in spec.environment.items():
        args += ["--env", f"{key}={value}"]
    for m in spec.mounts:
        ro = ",readonly" if m.read_only else ""
        args += ["--mount", f"type=bind,source={m.source},target={m.target}{ro}"]
    return [*args, spec.image]
