"""``python -m bench``: watcherd's speed and memory figures, each beside its floor (the same
work without watcherd) and its goal; a table on stdout, JSON with ``--json PATH``.

    python -m bench --quick                 # CI: a couple of minutes
    python -m bench --json bench.json       # the full run (some 20-30 minutes on 2 cores)
    python -m bench --only latency queue    # some sections

Sections (issue 11): spool (parse and claim, no Docker), latency (one job at a time, each
beside a docker-py create + start of the same container: paired, issue 25), throughput
(many jobs at concurrency 2 and 4), queue (10,000 queued, a runner that returns at once),
idle (daemon CPU at rest, the worker image), workspace (a large repository), swarm (issue
12: the same no-op jobs through backend local and backend swarm), gateway (a streamed model
response through the model gateway beside the same one direct: added time to the first
event, throughput, 20 concurrent streams), disk (issue 24: the kernel-held disk budget's
cost per job, beside the polled one: drop → start and throughput), serve (issue 20:
submissions through the HTTP API with event streams open, beside the same load without the
server).
All but spool and gateway need the Docker Engine and root (the daemon runs as it would in
production). Every container it starts is removed and every process stopped, also on
failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import docker

from bench import (
    backlog,
    disk,
    gateway,
    idle,
    latency,
    serve,
    spool,
    swarm,
    throughput,
    workspace,
)
from bench.common import PROFILE, client, log
from bench.report import Report

Section = Callable[[Report, bool, str, docker.DockerClient], None]
SECTIONS: dict[str, Section] = {
    "spool": spool.run,
    "latency": latency.run,
    "throughput": throughput.run,
    "queue": backlog.run,
    "idle": idle.run,
    "workspace": workspace.run,
    "swarm": swarm.run,
    "gateway": gateway.run,
    "disk": disk.run,
    "serve": serve.run,
}
NO_DOCKER = frozenset({"spool", "gateway", "serve"})  # sections that start no container


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="the short version, for CI")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(SECTIONS),
        metavar="SECTION",
        help=f"run only these sections ({', '.join(SECTIONS)})",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample every daemon with py-spy into DIR (slows it down: "
        "the figures of such a run are not the product's)",
    )
    args = parser.parse_args(argv)
    if args.profile:
        PROFILE["dir"] = args.profile.resolve()
    report = Report(mode="quick" if args.quick else "full")
    names = args.only or list(SECTIONS)
    docker_client = client() if set(names) - NO_DOCKER else None
    image = ""
    if docker_client is not None:
        docker_client.ping()
        # The tests' own stand-in image (built once per content); imported by name, so that
        # `mypy bench` checks the benchmark, not the test helpers.
        helpers = importlib.import_module("tests.support.helpers")
        image = str(helpers.behave_image())
        report.details["image"] = image
        report.notes.append(
            f"stand-in worker image {image} (PROMPT=succeed exits at once), network_mode none"
        )
    failed: list[str] = []
    for name in names:
        began = time.monotonic()
        log(f"section {name} ...")
        try:
            SECTIONS[name](report, args.quick, image, docker_client)
        except Exception as exc:  # one broken section must not hide the others' figures
            failed.append(name)
            report.notes.append(f"section {name} failed: {exc!r}")
            log(f"section {name} FAILED: {exc!r}")
            traceback.print_exc()
        log(f"section {name} took {time.monotonic() - began:.0f} s")
    print(report.table())
    if args.json:
        report.write_json(args.json)
        log(f"figures written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
