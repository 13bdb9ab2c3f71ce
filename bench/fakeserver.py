"""``python -m bench.fakeserver CONFIG``: watcherd.daemon.Server with a Runner whose
containers exit 0 at once, in a process of its own, so that its CPU and memory can be read
from /proc without the benchmark's. Everything else is the real daemon: inbox, spool,
fetch from the repository, workspace, results, exit.json. Prints the wall-clock ns at
which it was ready."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

from watcherd.backends import ContainerState, Runner, RunnerError
from watcherd.backends.base import Placement
from watcherd.backends.spec import JOB_LABEL, ContainerSpec
from watcherd.config import load_config
from watcherd.daemon.server import Server


class FakeRunner:
    """Runner (watcherd/backends/local.py) without Docker: start returns a handle, the container
    has exited 0 by the time anyone waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_job: dict[str, str] = {}

    def ping(self) -> None:
        return None

    def live_restore(self) -> bool:
        return True

    def start(self, spec: ContainerSpec) -> str:
        job_id = spec.labels[JOB_LABEL]
        with self._lock:
            self._by_job[job_id] = f"fake-{job_id}"
        return f"fake-{job_id}"

    def create(self, spec: ContainerSpec) -> None:
        return None  # made by start, as a Swarm service is

    def resume(self, handle: str) -> None:
        return None

    def unplaced(self, handle: str) -> str | None:
        return None  # placed at once, as on one Engine

    def wait(self, handle: str, timeout: float) -> int | None:
        return 0

    def kill(self, handle: str) -> None:
        return None

    def stop(self, handle: str, grace: float) -> None:
        return None

    def remove(self, handle: str) -> None:
        with self._lock:
            self._by_job.pop(handle.removeprefix("fake-"), None)

    def inspect(self, handle: str) -> ContainerState:
        return ContainerState(status="exited", exit_code=0, oom_killed=False, error="")

    def find(self, job_id: str) -> str | None:
        with self._lock:
            return self._by_job.get(job_id)

    def jobs(self, root: str) -> dict[str, str]:
        with self._lock:
            return dict(self._by_job)

    def logs_tail(self, handle: str, lines: int) -> str:
        return ""

    def placement(self, constraints: tuple[str, ...]) -> Placement:
        return Placement(constraints)

    def read_mounted(self, folder: Path, name: str, image: str) -> bytes | None:
        raise RunnerError("no Docker Engine here")  # so jobs' disk budgets are polled


def main(argv: list[str]) -> int:
    config = load_config(Path(argv[0]))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    runner: Runner = FakeRunner()
    server = Server(config, runner=runner)

    def say_ready() -> None:
        server.ready.wait()
        print(time.time_ns(), flush=True)

    threading.Thread(target=say_ready, daemon=True).start()
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
