"""``submit`` as a quick daemon meets it: the job is claimed the moment it is dropped, and
another job takes its name at once, so that an answer found by the name would be wrong."""

from __future__ import annotations

from collections.abc import Callable

from watcherd.client.submit import submit
from watcherd.config import Config
from watcherd.job.spec import JobSpec
from watcherd.spool.drop import Dropped
from watcherd.spool.folders import Layout, Spool

Submit = Callable[[Config, str, bytes], tuple[Dropped, JobSpec]]


def claimed_at_once(claimed: list[str], again: str) -> Submit:
    """A ``submit`` whose job is claimed at once (its id appended to ``claimed``), then
    ``again`` (another job file's text) dropped under its name and claimed too."""

    def submit_then_claim(config: Config, name: str, data: bytes) -> tuple[Dropped, JobSpec]:
        dropped, spec = submit(config, name, data)
        spool = Spool(Layout(config.root))
        job = spool.claim(dropped.path.name)
        assert job is not None
        claimed.append(job.job_id)
        (Layout(config.root).inbox / dropped.path.name).write_text(again)
        assert spool.claim(dropped.path.name) is not None
        return dropped, spec

    return submit_then_claim
