"""One job: its schema (bytes -> JobSpec or a clear error) and its life, the only path that ends
it: container spec, agent home and auth, results and outputs, disk use, resume, its events."""

from __future__ import annotations

from watcherd.job.spec import InvalidJob, JobSpec, parse_job

__all__ = ["InvalidJob", "JobSpec", "parse_job"]
