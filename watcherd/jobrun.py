"""The life of one claimed job: start (or adopt) its container, wait, collect, finish.

Runs in a worker thread. Reads top to bottom like the job's life; every path
ends in ``finish`` (exit.json written, job file moved) except a shutdown, which
leaves the job in running/ for the next start to adopt.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcherd.config import Config
from watcherd.container import build_spec, job_user
from watcherd.job import JobSpec
from watcherd.results import JobState, Outcome, read_worker_record, utc_now, write_exit_json
from watcherd.retry import TRANSIENT_EXIT_CODES, Backoff, TransientFailure
from watcherd.runner import (
    EngineUnavailable,
    NameConflict,
    Runner,
    RunnerError,
    TransientRunnerError,
)
from watcherd.spool import Claimed, Spool

log = logging.getLogger("watcherd.job")

WAIT_SLICE_SECONDS = 1.0  # how often a waiting job looks up for a shutdown


@dataclass(frozen=True)
class Lease:
    """What a job holds while it runs, handed out by the scheduler."""

    auth_dir: Path | None = None
    api_key: str | None = None


class PermanentFailure(Exception):
    """The container cannot be started at all (image missing, config refused)."""


class Interrupted(Exception):
    """The daemon is stopping; the job stays in running/ and its container keeps going."""


class JobLife:
    def __init__(
        self, config: Config, spool: Spool, runner: Runner, stop_event: threading.Event
    ) -> None:
        self.config = config
        self.spool = spool
        self.runner = runner
        self.stop_event = stop_event
        self.backoff = Backoff(config.backoff_initial, config.backoff_max)

    # -- the whole life ----------------------------------------------------------------

    def run(self, job: Claimed, spec: JobSpec, lease: Lease) -> Outcome | None:
        """Run to an outcome and finish the job; None if interrupted by shutdown."""
        state = self.spool.read_state(job.job_id)
        state.setdefault("source_name", job.source_name)
        state.setdefault("attempts", 0)
        self.spool.write_state(job.job_id, state)
        try:
            outcome = self._attempts(job, spec, lease, state)
        except Interrupted:
            log.info("job %s left running for the next start (shutdown)", job.job_id)
            job.release()
            return None
        self.finish(job, outcome)
        return outcome

    def _attempts(
        self, job: Claimed, spec: JobSpec, lease: Lease, state: dict[str, Any]
    ) -> Outcome:
        while True:
            retrying = self.backoff.retrying(
                retry_on=TransientFailure,
                give_up=lambda: state["attempts"] >= spec.max_attempts,
                stop_event=self.stop_event,
            )
            try:
                for attempt in retrying:
                    with attempt:
                        return self._attempt(job, spec, lease, state)
            except TransientFailure as exc:
                if self.stop_event.is_set():
                    raise Interrupted from exc
                return Outcome(
                    JobState.FAILED,
                    f"gave up after {state['attempts']} attempt(s): {exc}",
                    attempts=state["attempts"],
                    exit_code=state.get("exit_code"),
                    started_at=state.get("started_at"),
                )
            except PermanentFailure as exc:
                return Outcome(
                    JobState.FAILED,
                    f"could not start the container: {exc}",
                    attempts=state["attempts"],
                    started_at=state.get("started_at"),
                )
            except EngineUnavailable as exc:
                log.warning("job %s: %s; waiting for the Engine", job.job_id, exc)
                self._wait_for_engine()  # then go round: adopt the container or start it

    def _wait_for_engine(self) -> None:
        if not self.backoff.wait_for(
            self.runner.ping, retry_on=EngineUnavailable, stop_event=self.stop_event
        ):
            raise Interrupted

    # -- one attempt -------------------------------------------------------------------

    def _attempt(self, job: Claimed, spec: JobSpec, lease: Lease, state: dict[str, Any]) -> Outcome:
        handle = self.runner.find(job.job_id)
        if handle is None:
            if state["attempts"] >= spec.max_attempts:
                return Outcome(
                    JobState.FAILED,
                    f"no attempts left ({state['attempts']} of {spec.max_attempts} used) "
                    "and no container to collect",
                    attempts=state["attempts"],
                )
            handle = self._start(job, spec, lease, state)
        else:
            log.info("job %s: adopting its container %s", job.job_id, handle[:12])
            if self.runner.inspect(handle).status == "created":
                self.runner.resume(handle)
        return self._wait(job, spec, handle, state)

    def _start(self, job: Claimed, spec: JobSpec, lease: Lease, state: dict[str, Any]) -> str:
        out_dir = self.spool.layout.out_dir(job.job_id)
        repo_dir = self.spool.layout.repos / spec.repo_dir
        user = job_user(self.config)  # stats the work root: once per start
        self._prepare_dirs(user, out_dir, repo_dir, lease.auth_dir)
        container = build_spec(
            config=self.config,
            job=spec,
            job_id=job.job_id,
            user=user,
            out_dir=out_dir,
            repo_dir=repo_dir,
            auth_dir=lease.auth_dir,
            api_key=lease.api_key,
        )
        # Counted before the container exists: a crash right after create must not
        # hand the job a free attempt.
        state["attempts"] += 1
        state["started_at"] = utc_now()
        state["deadline"] = time.time() + spec.timeout
        self.spool.write_state(job.job_id, state)
        log.info(
            "job %s: attempt %d of %d, starting %s",
            job.job_id, state["attempts"], spec.max_attempts, container.name,
        )  # fmt: skip
        try:
            return self.runner.start(container)
        except NameConflict as exc:
            found = self.runner.find(job.job_id)
            if found is None:
                raise TransientFailure("container name taken by one being removed") from exc
            log.info("job %s: its container already exists, adopting it", job.job_id)
            return found
        except EngineUnavailable:
            raise
        except TransientRunnerError as exc:
            raise TransientFailure(str(exc)) from exc
        except RunnerError as exc:
            raise PermanentFailure(str(exc)) from exc

    def _wait(self, job: Claimed, spec: JobSpec, handle: str, state: dict[str, Any]) -> Outcome:
        deadline = float(state.get("deadline") or time.time() + spec.timeout)
        while True:
            if self.stop_event.is_set():
                raise Interrupted
            remaining = deadline - time.time()
            if remaining <= 0:
                return self._time_out(job, spec, handle, state)
            code = self.runner.wait(handle, min(remaining, WAIT_SLICE_SECONDS))
            if code is not None:
                return self._collect(job, handle, code, state)

    def _time_out(self, job: Claimed, spec: JobSpec, handle: str, state: dict[str, Any]) -> Outcome:
        log.warning("job %s: timed out after %.0fs, killing it", job.job_id, spec.timeout)
        self.runner.kill(handle)
        code = self.runner.wait(handle, 30.0)
        return Outcome(
            JobState.TIMEOUT,
            f"timed out after {spec.timeout:.0f}s; the container was killed",
            attempts=state["attempts"],
            exit_code=code,
            started_at=state.get("started_at"),
        )

    def _collect(self, job: Claimed, handle: str, code: int, state: dict[str, Any]) -> Outcome:
        container = self.runner.inspect(handle)
        worker_reason = _worker_reason(self.spool.layout.out_dir(job.job_id))
        state["exit_code"] = code
        common: dict[str, Any] = {
            "attempts": state["attempts"],
            "exit_code": code,
            "started_at": state.get("started_at"),
        }
        if code == 0:
            return Outcome(JobState.DONE, worker_reason or "finished", **common)
        if container.oom_killed:
            return Outcome(JobState.FAILED, "killed: the container ran out of memory", **common)
        if code in TRANSIENT_EXIT_CODES:
            # The next attempt reuses the name, so this container must go first.
            self.runner.remove(handle)
            raise TransientFailure(worker_reason or f"worker exited with transient code {code}")
        reason = worker_reason or _describe_exit(code, self.runner.logs_tail(handle, 5))
        return Outcome(JobState.FAILED, reason, **common)

    # -- the end -----------------------------------------------------------------------

    def finish(self, job: Claimed, outcome: Outcome) -> None:
        """exit.json first, then the move, then the container: a crash between any two
        steps is repaired at the next start without running the job again."""
        out_dir = self.spool.layout.out_dir(job.job_id)
        write_exit_json(out_dir, job.job_id, job.source_name, outcome)
        self.spool.finish(job, ok=outcome.state.ok)
        log.info("job %s: %s (%s)", job.job_id, outcome.state.value, outcome.reason)
        try:
            handle = self.runner.find(job.job_id)
            if handle is not None:
                self.runner.remove(handle)
        except RunnerError as exc:
            log.warning("job %s: container not removed yet (%s); removed at next start",
                        job.job_id, exc)  # fmt: skip
        self.spool.drop_state(job.job_id)

    def _prepare_dirs(
        self, user: str, out_dir: Path, repo_dir: Path, auth_dir: Path | None
    ) -> None:
        """Create the job's folders owned by the job user, so a non-root container can
        write them and the host user owns what it leaves."""
        uid, gid = (int(part) for part in user.split(":"))
        for folder, mode in ((out_dir, 0o755), (repo_dir, 0o755), (auth_dir, 0o700)):
            if folder is None:
                continue
            folder.mkdir(mode=mode, parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(folder, uid, gid)


def _worker_reason(out_dir: Path) -> str:
    """The reason the worker image wrote into its exit.json, if any."""
    reason = read_worker_record(out_dir).get("reason")
    return str(reason)[:2000] if reason else ""


def _describe_exit(code: int, logs: str) -> str:
    if code > 128:
        return f"worker killed by signal {code - 128}"
    tail = logs.strip().splitlines()[-1:] if logs.strip() else []
    return f"worker exited with code {code}" + (f": {tail[0][:500]}" if tail else "")
