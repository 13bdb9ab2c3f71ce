"""``GET /metrics``: the root's jobs in the Prometheus text format (0.0.4).

Read from the root as every other view is (the daemon's own process figures stay the
daemon's: this server never runs a job)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from watcherd.client.listing import JobLine
from watcherd.web.api import root_of
from watcherd.web.auth import needs

STATES = ("queued", "running", "done", "failed", "timeout", "invalid", "cancelled")
DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


@needs("read")
async def metrics(request: web.Request) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    lines = await loop.run_in_executor(None, root_of(request).jobs.all)
    return web.Response(text=render(lines), content_type="text/plain",
                        charset="utf-8", headers={"X-Content-Type-Options": "nosniff"})  # fmt: skip


def render(jobs: list[JobLine]) -> str:
    counts = dict.fromkeys(STATES, 0)
    attempts = input_tokens = output_tokens = 0
    durations: list[float] = []
    for job in jobs:
        counts[job.state] = counts.get(job.state, 0) + 1
        attempts += job.attempts or 0
        input_tokens += job.input_tokens or 0
        output_tokens += job.output_tokens or 0
        if job.duration is not None and job.state not in ("queued", "running"):
            durations.append(job.duration)
    out = [
        "# HELP watcherd_jobs Jobs under the root by state (queued: in the inbox).",
        "# TYPE watcherd_jobs gauge",
        *(f'watcherd_jobs{{state="{state}"}} {count}' for state, count in sorted(counts.items())),
        "# HELP watcherd_queue_depth Jobs waiting in the inbox.",
        "# TYPE watcherd_queue_depth gauge",
        f"watcherd_queue_depth {counts['queued']}",
        "# HELP watcherd_running Jobs claimed and not yet filed.",
        "# TYPE watcherd_running gauge",
        f"watcherd_running {counts['running']}",
        "# HELP watcherd_attempts_total Attempts of every job under the root.",
        "# TYPE watcherd_attempts_total counter",
        f"watcherd_attempts_total {attempts}",
        "# HELP watcherd_tokens_total Model tokens of finished jobs, as the gateway counted.",
        "# TYPE watcherd_tokens_total counter",
        f'watcherd_tokens_total{{kind="input"}} {input_tokens}',
        f'watcherd_tokens_total{{kind="output"}} {output_tokens}',
        "# HELP watcherd_job_duration_seconds From a finished job's start to its end.",
        "# TYPE watcherd_job_duration_seconds histogram",
    ]
    for bound in DURATION_BUCKETS:
        out.append(f'watcherd_job_duration_seconds_bucket{{le="{bound}"}} '
                   f"{sum(1 for d in durations if d <= bound)}")  # fmt: skip
    out += [
        f'watcherd_job_duration_seconds_bucket{{le="+Inf"}} {len(durations)}',
        f"watcherd_job_duration_seconds_sum {sum(durations):.3f}",
        f"watcherd_job_duration_seconds_count {len(durations)}",
    ]
    return "\n".join(out) + "\n"
