"""The life of one claimed job: prepare, start (or adopt) its container, wait, collect, finish.

Runs in a worker thread. Reads top to bottom like the job's life; every path ends in
``finish`` (exit.json written, job file moved), even an unexpected error, except a
shutdown, which leaves the job in running/ for the next start to adopt.

Every attempt starts clean: fresh out/<id>/, a fresh workspace from the repository
cache, a fresh agent home. After the container exits nothing it left is trusted: out/<id>/
is made safe before it is read, the agent's commits come in as a bundle that fsck checks,
and the patch is computed by the daemon.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from watcherd.agents import AGENTS, AgentProfile, AgentReport
from watcherd.agents.base import LoginError
from watcherd.backends import (
    NO_EXIT_CODE,
    EngineUnavailable,
    NameConflict,
    Runner,
    RunnerError,
    TransientRunnerError,
)
from watcherd.backends.base import Gone
from watcherd.backends.spec import ContainerSpec
from watcherd.config import Config
from watcherd.gateway.egress import EgressPolicy
from watcherd.gateway.grants import Grant, Spent, new_token
from watcherd.gateway.server import Gateway
from watcherd.job.container import build_spec, job_user, pool_constraints
from watcherd.job.disk import FILESYSTEM, POLL, Disk, JobDisks
from watcherd.job.diskuse import tree_bytes
from watcherd.job.home import AgentHomes
from watcherd.job.model import ModelAccess, operator_env, spent_before, wire_model
from watcherd.job.outputs import keep_only_known, make_safe
from watcherd.job.results import (
    DiskBound,
    JobState,
    Outcome,
    SavedWork,
    read_worker_record,
    utc_now,
    write_exit_json,
)
from watcherd.job.resume import ResumeError, ResumePoint, find_resume_point
from watcherd.job.slots import Lease, StartGate
from watcherd.job.spec import JobSpec
from watcherd.job.steplog import StepLog
from watcherd.relay.hub import Hub
from watcherd.repo.cache import RepoCache, RepoError, Results, Stopped, cache_key
from watcherd.repo.workspace import Workspaces
from watcherd.spool.cancel import CancelBook
from watcherd.spool.folders import Claimed, Layout, RunState, Spool
from watcherd.spool.origin import read_origin
from watcherd.util import loopfs
from watcherd.util.fsutil import User, fresh_folder, remove_tree, require_room, write_atomic
from watcherd.util.retry import TRANSIENT_EXIT_CODES, Backoff, TransientFailure
from watcherd.util.safeio import read_whole

log = logging.getLogger("watcherd.job")

STOPPED_EXIT_CODE = 124  # the worker, after SIGTERM: it saved the agent's work and stopped
WAIT_SLICE_SECONDS = 1.0  # how often a waiting job looks up for a shutdown
DISK_CHECK_MIN_SECONDS = 1.0
DISK_CHECK_MAX_SECONDS = 5.0  # however slow a measurement, never longer between two
PLACEMENT_POLL_SECONDS = (0.05, 1.0)  # first and longest pause while a container has no place
DISK_CHECK_DUTY = 50  # measuring may take at most 1/50 of the time between two measurements
MAX_AUDIT_BYTES = 64 * 1024 * 1024
GATE_POLL_SECONDS = 0.25  # how often a prepared job looks for a cancel or a shutdown
CLEANUP_QUEUE = 16  # filed jobs whose containers may wait for removal before slots do


class PermanentFailure(Exception):
    """This job cannot run: the container cannot be created, the ref does not exist, ..."""


class Interrupted(Exception):
    """The daemon is stopping; the job stays in running/ and its container keeps going."""


class CancelledAhead(Exception):
    """A prepared job was cancelled while it waited for a slot: ``str()`` is by whom."""


class DiskFull(Exception):
    """The root's filesystem is full: waited out, and it costs the job no attempt."""


class DiskBoundUnavailable(Exception):
    """``disk_bound: require``, and job filesystems cannot be made here: ``str()`` says why."""


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc)  # git's words, through RepoError


class Ending(enum.Enum):
    EXITED = "exited"
    TIMED_OUT = "timed out"
    OVER_BUDGET = "over its disk budget"
    OVER_TOKENS = "over its token budget"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ContainerEnd:
    how: Ending
    exit_code: int | None
    disk_used: int = 0
    cancelled_by: str = ""


class JobLife:
    def __init__(
        self, config: Config, spool: Spool, runner: Runner, stop_event: threading.Event
    ) -> None:
        self.config = config
        self.spool = spool
        self.runner = runner
        self.stop_event = stop_event
        self.backoff = Backoff(config.backoff_initial, config.backoff_max)
        self.cache = RepoCache(config.root, config.allowed_protocols, config.fetch_timeout)
        self.workspaces = Workspaces(
            config.root, config.keep_workspaces, config.workspace_retention,
            config.allowed_protocols,
        )  # fmt: skip
        self.homes = AgentHomes(config.root)
        self.cancels = CancelBook(spool.layout)
        self.disks = JobDisks(config.root)
        self.api_keys: dict[str, tuple[str, str]] = {}  # agent -> (variable, key)
        self.gateway = Gateway(max_body=config.gateway_max_body, relays=_relays(config))
        self._pruning = threading.Lock()
        self.cleaner = Cleaner()
        self.on_finished: Callable[[Claimed, Config], None] = _nothing  # notifications

    # -- the whole life ----------------------------------------------------------------

    def run(
        self, job: Claimed, spec: JobSpec, lease: Lease, gate: StartGate | None = None
    ) -> Outcome | None:
        """Run to an outcome and finish the job; None if interrupted by shutdown. With a
        ``gate``, the job is prepared now and its container started once the gate opens."""
        # Nothing to write yet: the claim wrote this record (or an earlier life did), and
        # the first write that matters counts the attempt, just before its container.
        state = self.spool.read_state(job.job_id, job.source_name)
        try:
            outcome = self._attempts(job, spec, lease, state, gate)
            if outcome.disk is None and state.disk_bound:
                budget = spec.disk or self.config.disk_budget
                outcome = outcome.with_disk(DiskBound(state.disk_bound, budget, why=state.disk_why))
            self._until_room(lambda: self.finish(job, outcome))
        except Interrupted:
            log.info("job %s left running for the next start (shutdown)", job.job_id)
            job.release()
            return None
        except Exception as exc:  # a bug must not strand the job in running/
            log.exception("job %s: unexpected error", job.job_id)
            outcome = self._outcome(JobState.FAILED, f"internal error: {exc!r}", state)
            self.finish(job, outcome)
        return outcome

    def _until_room(self, action: Callable[[], object]) -> None:
        """``action`` again and again while the disk is full, waiting in between."""
        delay = self.backoff.initial
        while True:
            try:
                action()
                return
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                log.warning("disk full (%s); waiting %.0fs", exc, delay)
            if self.stop_event.wait(delay):
                raise Interrupted
            delay = min(delay * 2, self.backoff.maximum)

    def _attempts(
        self, job: Claimed, spec: JobSpec, lease: Lease, state: RunState, gate: StartGate | None
    ) -> Outcome:
        while True:
            retrying = self.backoff.retrying(
                retry_on=TransientFailure,
                give_up=lambda: state.attempts >= spec.max_attempts,
                stop_event=self.stop_event,
                on_retry=lambda failure, pause: log.warning(
                    "job %s: attempt %d failed (%s); again in %.1fs",
                    job.job_id, state.attempts, failure, pause,
                ),
            )  # fmt: skip
            try:
                for attempt in retrying:
                    with attempt:
                        return self._attempt(job, spec, lease, state, gate)
            except TransientFailure as exc:
                if self.stop_event.is_set():
                    raise Interrupted from exc
                reason = f"gave up after {state.attempts} attempt(s): {exc}"
                return self._outcome(JobState.FAILED, reason, state)
            except PermanentFailure as exc:
                return self._outcome(JobState.FAILED, str(exc), state)
            except EngineUnavailable as exc:
                log.warning("job %s: %s; waiting for the Engine", job.job_id, exc)
                self._wait_for_engine()  # then go round: adopt the container or start it
            except DiskFull as exc:
                log.warning("job %s: %s; waiting for room, no attempt used", job.job_id, exc)
                self._until_room(lambda: require_room(self.config.root, self.config.min_free_disk))

    def _wait_for_engine(self) -> None:
        if not self.backoff.wait_for(
            self.runner.ping, retry_on=EngineUnavailable, stop_event=self.stop_event
        ):
            raise Interrupted

    # -- disk budgets ------------------------------------------------------------------

    def start_disks(self, running: set[str]) -> None:
        """At start-up: whether job filesystems can hold disk budgets here (said once, in
        the log), and the filesystems of finished jobs mounted again after a reboot."""
        if self.config.disk_bound == "poll":
            why = "disk_bound: poll in the config"
        else:
            why = self.disks.probe(
                lambda folder, name: self.runner.read_mounted(folder, name, self.config.image)
            )
        self.disks.enabled, self.disks.why_not = not why, why
        if why:
            log.warning(
                "disk budgets are polled, not held: %s. A job can write past its budget "
                "between two measurements (README, Running jobs)", why,
            )  # fmt: skip
            if self.config.disk_bound == "require":
                raise DiskBoundUnavailable(why)
        else:
            log.info("disk budgets: a filesystem of its budget's size per job (ext4 on a "
                     "loop device): no job can write past it")  # fmt: skip
        if os.geteuid() == 0:  # only root can have made them
            self.disks.recover(running)

    def _disk_bound(self, spec: JobSpec, state: RunState) -> tuple[str, ...] | None:
        """How this attempt's budget holds (into ``state``), and the placement that keeps
        a filesystem-bound job where its filesystem is (None: the config's)."""
        constraints = pool_constraints(self.config, spec)
        if not self.disks.enabled:
            state.disk_bound, state.disk_why = POLL, self.disks.why_not
            return None
        placement = self.runner.placement(constraints)
        if placement.elsewhere:
            why = (f"its task may run on node {placement.elsewhere}, where the daemon cannot "
                   "mount its filesystem")  # fmt: skip
            if self.config.disk_bound == "require":
                raise PermanentFailure(f"disk_bound is require, and {why} (README, Swarm)")
            state.disk_bound, state.disk_why = POLL, why
            return None
        state.disk_bound, state.disk_why = FILESYSTEM, ""
        return placement.constraints

    def _make_disk(
        self, job: Claimed, budget: int, state: RunState, placement: tuple[str, ...] | None
    ) -> tuple[Disk | None, tuple[str, ...] | None]:
        """The job's filesystem; where it cannot be made this time (no loop device free,
        say), the attempt's budget is polled (``require``: the attempt is retried)."""
        try:
            return self.disks.create(job.job_id, budget), placement
        except loopfs.LoopError as exc:
            if exc.errno == errno.ENOSPC:
                raise  # the host's disk: waited out
            why = f"its filesystem could not be made ({exc})"
            if self.config.disk_bound == "require":
                raise TransientFailure(why) from exc
            log.warning("job %s: %s; its disk budget is polled", job.job_id, why)
            state.disk_bound, state.disk_why = POLL, why
            return None, None

    def _job_disk(self, job: Claimed, state: RunState) -> Disk | None:
        """The mounted filesystem of a job whose budget one holds (mounted again after a
        reboot); None for a polled job, or one whose filesystem is lost (polled from now)."""
        if state.disk_bound != FILESYSTEM:
            return None
        disk = self.disks.get(job.job_id) or self.disks.remount(job.job_id)
        if disk is None:
            log.warning("job %s: its filesystem is gone; its disk budget is polled", job.job_id)
            state.disk_bound, state.disk_why = POLL, "its filesystem was lost (a reboot?)"
        return disk

    def _host_has_room(self) -> bool:
        try:
            require_room(self.config.root, max(self.config.min_free_disk, 1))
        except OSError:
            return False
        return True

    # -- one attempt -------------------------------------------------------------------

    def _attempt(
        self, job: Claimed, spec: JobSpec, lease: Lease, state: RunState, gate: StartGate | None
    ) -> Outcome:
        try:
            return self._attempt_once(job, spec, lease, state, gate)
        except EngineUnavailable:
            raise
        except TransientRunnerError as exc:  # the Engine said 5xx, at any step
            raise TransientFailure(str(exc)) from exc

    def _attempt_once(
        self, job: Claimed, spec: JobSpec, lease: Lease, state: RunState, gate: StartGate | None
    ) -> Outcome:
        # A job this process has just claimed from the inbox (job.fresh) has an id that
        # the claim minted: a container of this id is made only by _start below, only by
        # the process holding the job's lock (this one), and only after the state write
        # that counts its attempt. So before its first start there is nothing to find and
        # the Engine is not asked. From the first start on (even one that failed: the
        # Engine may have made the container before failing), and for every job taken
        # over from running/ (an earlier daemon may have started it), it is.
        handle = None if job.fresh else self.runner.find(job.job_id)
        if handle is None and (cancel := self.cancels.for_job(job.job_id)) is not None:
            return self._outcome(JobState.FAILED, "", state).cancelled(cancel.by)
        if handle is None:
            state.prepared = False  # prepared once, and its container never made: redone
            if state.starting:
                # A crash came between counting the attempt and making its container:
                # nothing ran, so it does not count.
                state.attempts -= 1
                state.starting = False
                log.info("job %s: its last attempt never started; not counted", job.job_id)
            if state.attempts >= spec.max_attempts:
                reason = (
                    f"no attempts left ({state.attempts} of {spec.max_attempts} used) "
                    "and no container to collect"
                )
                return self._outcome(JobState.FAILED, reason, state)
            job.fresh = False
            job.container = None  # until this start says which: finish() then asks
            try:
                handle = self._start(job, spec, lease, state, gate)
            except CancelledAhead as exc:
                self.gateway.close(job.job_id)
                return self._outcome(JobState.FAILED, "", state).cancelled(str(exc))
        else:
            log.info("job %s: adopting its container %s", job.job_id, handle[:12])
            if state.prepared:  # made ahead, never started: its attempt counts from now on,
                self._count_prepared(state, spec)  # on disk by _started, before the resume
            if state.gateway_token:  # its model again, at the same socket, with the same token
                self._open_gateway(job.job_id, spec, lease, state, home=None)
            self._started(job, state)
            if self.runner.inspect(handle).status == "created":
                self.runner.resume(handle)
        job.container = handle
        try:
            self._until_placed(job, spec, handle, state)
            end = self._wait(job, spec, handle, state)
        finally:
            spent = self.gateway.close(job.job_id)  # its token is good nowhere from now on
        if gate is not None and end.exit_code is not None and lease.auth_dir is None:
            # Its container has ended: the next job starts while this one is filed (a
            # job with a login dir gives its slot back with the dir, at its end).
            gate.hand_back()
        outcome: Outcome | None = None

        def collect() -> None:
            nonlocal outcome
            outcome = self._collect(job, spec, lease, handle, end, state, spent)

        self._until_room(collect)  # the container waits, exited, until its work is saved
        assert outcome is not None
        return outcome

    def _start(
        self, job: Claimed, spec: JobSpec, lease: Lease, state: RunState, gate: StartGate | None
    ) -> str:
        user = job_user(self.config)  # stats the work root: once per start
        owner = User.parse(user)
        # Counted now, and marked "starting" until its container exists. One durable write
        # records both, with the workspace's commit and the deadline, just before the
        # container is created: a crash before it leaves the attempt uncounted on disk
        # (nothing ran), a crash after it and before the container exists gives the
        # attempt back (_attempt_once), and a failure to prepare uses it (written below).
        state.attempts += 1
        state.starting = True
        state.started_at = utc_now()
        branch = result_branch(job.job_id, spec)
        profile = AGENTS[spec.agent]
        budget = spec.disk or self.config.disk_budget
        disk: Disk | None = None
        try:
            resume = self._resume_point(spec)
            require_room(self.config.root, self.config.min_free_disk)
            placement = self._disk_bound(spec, state)
            if state.disk_bound == FILESYSTEM:
                disk, placement = self._make_disk(job, budget, state, placement)
            elif self.disks.has(job.job_id):
                self.disks.release(job.job_id)  # an earlier attempt's
            out_dir = self._fresh_out_dir(job.job_id, owner)
            commit = self.cache.update(
                spec.repo_url, spec.repo_ref, self.stop_event, written_at=job.written_at
            )
            earlier = None
            if resume is not None:  # on from where the earlier job's work ended
                commit, earlier = resume.commit, (resume.results_repo, resume.branch)
            workspace = self.workspaces.create(
                job.job_id, cache_key(spec.repo_url), commit, branch, owner, earlier=earlier
            )
            if lease.auth_dir is not None and profile.renew_login is not None:
                env = operator_env(self.config, spec.agent)
                profile.renew_login(lease.auth_dir, env, spec.timeout)
            home = self.homes.create(
                job.job_id, owner, profile, source=self._agent_config_dir(spec, lease),
                resume_from=resume.sessions if resume else None,
            )  # fmt: skip
        except ResumeError as exc:
            state.starting = False
            self.spool.write_state(job.job_id, state)
            raise PermanentFailure(str(exc)) from exc
        except LoginError as exc:
            state.starting = False
            self.spool.write_state(job.job_id, state)
            failure = TransientFailure if exc.transient else PermanentFailure
            raise failure(f"{profile.name}'s login in {lease.auth_dir}: {exc}") from exc
        except Stopped as exc:
            raise Interrupted from exc  # on disk the attempt was never counted
        except (OSError, RepoError) as exc:
            state.starting = False
            if is_disk_full(exc) and disk is not None and self._host_has_room():
                # Its own filesystem is what is full: its files do not fit its budget.
                self.spool.write_state(job.job_id, state)
                raise PermanentFailure(
                    f"disk budget exceeded: what the job starts with does not fit in "
                    f"{budget} bytes ({exc})"
                ) from exc
            if is_disk_full(exc):
                state.attempts -= 1  # nothing ran; on disk it was never counted
                raise DiskFull(str(exc)) from exc
            self.spool.write_state(job.job_id, state)
            if isinstance(exc, RepoError) and exc.transient:
                raise TransientFailure(str(exc)) from exc
            if isinstance(exc, RepoError):
                raise PermanentFailure(str(exc)) from exc
            raise
        if disk is not None and disk.over():  # git leaves a file it could not write whole
            state.starting = False
            self.spool.write_state(job.job_id, state)
            raise PermanentFailure(
                f"disk budget exceeded: what the job starts with does not fit in {budget} "
                f"bytes (its workspace and home took {disk.used()})"
            )
        state.gateway_token = state.gateway_token or new_token()
        model, run_dir = self._open_gateway(job.job_id, spec, lease, state, home)
        container = build_spec(
            config=self.config, job=spec, job_id=job.job_id, attempt=state.attempts,
            user=user, out_dir=out_dir, workspace=workspace, home=home, branch=branch,
            model=model, run_dir=run_dir, resume_session=resume.session_id if resume else None,
            placement=placement,
        )  # fmt: skip
        state.commit_before = commit
        try:
            made = None
            if gate is not None and not gate.is_open:
                made = self._prepare_ahead(job, spec, state, container, gate)
            state.deadline = time.time() + spec.timeout
            self.spool.write_state(job.job_id, state)  # durable before the container runs
            log.info(
                "job %s: attempt %d of %d, starting %s on %s at %s", job.job_id,
                state.attempts, spec.max_attempts, container.name, branch, commit[:12],
            )  # fmt: skip
            if made is None:
                handle = self.runner.start(container)
            else:
                handle = made
                self._resume_prepared(handle)
            self._started(job, state)
            return handle
        except NameConflict as exc:
            found = self.runner.find(job.job_id)
            if found is None:
                raise TransientFailure("container name taken by one being removed") from exc
            log.info("job %s: its container already exists, adopting it", job.job_id)
            self._started(job, state)
            return found
        except EngineUnavailable:
            raise  # waited for; the attempt is given back (state.starting)
        except TransientRunnerError as exc:
            state.starting = False  # the Engine answered: this attempt is used
            raise TransientFailure(str(exc)) from exc
        except RunnerError as exc:
            raise PermanentFailure(f"could not start the container: {exc}") from exc

    def _prepare_ahead(
        self, job: Claimed, spec: JobSpec, state: RunState, container: ContainerSpec,
        gate: StartGate,
    ) -> str | None:  # fmt: skip
        """Every slot is busy: the container is made now (where the backend can make one
        without starting it) and waits for a slot. Until then the attempt is not counted,
        on disk either: a crash leaves a prepared job that the next start queues first and
        starts once (Server._adopt_orphans). Returns the container, None if not made yet."""
        state.attempts -= 1
        state.starting, state.prepared = False, True
        self.spool.write_state(job.job_id, state)  # its token and commit, for its container
        try:
            made = self.runner.create(container)
        except RunnerError:
            state.attempts += 1  # a failure to make it uses the attempt, as a failed start
            state.prepared = False
            raise
        job.container = made
        log.info("job %s: prepared, waiting for a slot", job.job_id)
        while not gate.wait(GATE_POLL_SECONDS):
            if self.stop_event.is_set():
                raise Interrupted
            if (cancel := self.cancels.for_job(job.job_id)) is not None:
                log.info("job %s: cancelled by %s before it started", job.job_id, cancel.by)
                raise CancelledAhead(cancel.by)
        self._count_prepared(state, spec)
        return made

    def _resume_prepared(self, handle: str) -> None:
        try:
            self.runner.resume(handle)
        except Gone as exc:  # removed from outside while it waited: made again next time
            raise TransientFailure(f"its prepared container is gone ({exc})") from exc

    @staticmethod
    def _count_prepared(state: RunState, spec: JobSpec) -> None:
        """A prepared job starts: its attempt counts now, and its clock starts now."""
        state.attempts += 1
        state.starting, state.prepared = True, False
        state.started_at = utc_now()
        state.deadline = time.time() + spec.timeout

    def start_relays(self, running: Iterable[str]) -> None:
        """On Swarm, make the sockets' links folder now, and where relays connect (config
        relay.listen) listen now rather than at the first job, with the relays told to keep
        the folders of the ``running`` jobs a task may still be using until each job's life
        opens (or ends) it again. Raises what keeps them from starting."""
        if self.gateway.relays is not None:
            self.gateway.relays.keep(running)
            self.gateway.start()

    def _open_gateway(
        self, job_id: str, spec: JobSpec, lease: Lease, state: RunState, home: Path | None
    ) -> tuple[ModelAccess, Path]:
        """The job's grant at the gateway, on sockets in run/<id>/ (mounted into its
        container); with ``home``, its copies of the operator's files rewritten to match."""
        assert state.gateway_token is not None
        profile = AGENTS[spec.agent]
        model = wire_model(
            self.config, spec, profile, self._agent_config_dir(spec, lease), state.gateway_token,
            self.api_keys.get(spec.agent), login=bool(lease.auth_dir),
        )  # fmt: skip
        if home is not None:
            self.homes.replace_files(home, model.files)
        run_dir = self.spool.layout.root / "run" / job_id
        run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        audit = self._audit_path(job_id)
        grant = Grant(
            job_id, state.gateway_token, model.upstreams, audit_path=audit,
            token_budget=spec.token_budget or self.config.token_budget,
            allow_network_tools=spec.network_tools, used=spent_before(audit),
        )  # fmt: skip
        egress = None
        if isinstance(spec.network, tuple):
            lists = tuple(self.config.egress[name] for name in spec.network)
            egress = EgressPolicy(lists, hosts=self.config.egress_hosts)
        self.gateway.open(grant, run_dir, egress)
        return model, self.gateway.mount_source(job_id, run_dir)

    def _audit_path(self, job_id: str) -> Path:
        folder = self.spool.layout.root / "audit"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder / f"{job_id}.jsonl"

    def _started(self, job: Claimed, state: RunState) -> None:
        """The attempt's container exists (made now, or adopted): it is no longer
        "starting", on disk too, so that a crash after the container is gone again (a
        transient failure removes it) never gives back an attempt that ran."""
        if state.starting:
            state.starting = False
            self.spool.write_state(job.job_id, state)

    def _fresh_out_dir(self, job_id: str, owner: User) -> Path:
        """out/<id>/ as the job's user, emptied: an attempt never reads an earlier one's."""
        out_dir = self.spool.layout.out_dir(job_id)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        fresh_folder(out_dir, 0o755)  # the job's filesystem's out/, bound there, or the root's
        if os.geteuid() == 0:
            os.chown(out_dir, owner.uid, owner.gid)
        return out_dir

    def _agent_config_dir(self, spec: JobSpec, lease: Lease) -> Path | None:
        """The operator's dir for this agent: the leased login, else its config dir."""
        folder = lease.auth_dir or self.config.agent_settings(spec.agent).config_dir
        return folder if folder is not None and folder.is_dir() else None

    def _resume_point(self, spec: JobSpec) -> ResumePoint | None:
        if spec.resume is None:
            return None
        results = self.cache.results_path(cache_key(spec.repo_url))
        return find_resume_point(self.spool.layout, spec.resume, spec.agent, results)

    def _until_placed(self, job: Claimed, spec: JobSpec, handle: str, state: RunState) -> None:
        """Until the backend has found the container a place (at once on one Engine; a
        Swarm may have no node with room): the reason goes to ``status``, and the job's
        timeout starts when it has a place."""
        pause = PLACEMENT_POLL_SECONDS[0]
        while (reason := self.runner.unplaced(handle)) is not None:
            if self.cancels.for_job(job.job_id) is not None:
                return  # _wait stops it
            if reason and reason != state.waiting:
                log.info("job %s: waiting for a place: %s", job.job_id, reason)
                state.waiting = reason
                self.spool.write_state(job.job_id, state)
            if self.stop_event.wait(pause):
                raise Interrupted
            pause = min(pause * 2, PLACEMENT_POLL_SECONDS[1])
        if state.waiting:
            state.waiting = ""
            state.deadline = time.time() + spec.timeout
            self.spool.write_state(job.job_id, state)

    def _wait(self, job: Claimed, spec: JobSpec, handle: str, state: RunState) -> ContainerEnd:
        deadline = state.deadline or time.time() + spec.timeout
        budget = spec.disk or self.config.disk_budget
        disk = self._job_disk(job, state)
        watched = [
            self.workspaces.path(job.job_id),
            self.spool.layout.out_dir(job.job_id),
            self.homes.path(job.job_id),
        ]
        next_disk_check = 0.0
        steps = StepLog(job.job_id, self.spool.layout.out_dir(job.job_id) / "events.jsonl")
        while True:
            if self.stop_event.is_set():
                raise Interrupted
            if (cancel := self.cancels.for_job(job.job_id)) is not None:
                log.info("job %s: cancelled by %s, stopping it", job.job_id, cancel.by)
                self.runner.stop(handle, self.config.stop_grace)
                code = self.runner.wait(handle, 30.0)
                return ContainerEnd(Ending.CANCELLED, code, cancelled_by=cancel.by)
            remaining = deadline - time.time()
            if remaining <= 0:
                log.warning("job %s: timed out after %.0fs, stopping it", job.job_id, spec.timeout)
                self.runner.stop(handle, self.config.stop_grace)
                return ContainerEnd(Ending.TIMED_OUT, self.runner.wait(handle, 30.0))
            if disk is not None:
                if disk.over():  # a write past it failed: its filesystem is full
                    log.warning("job %s: over its disk budget (its filesystem is full), "
                                "killing it", job.job_id)  # fmt: skip
                    self.runner.kill(handle)
                    code = self.runner.wait(handle, 30.0)
                    return ContainerEnd(Ending.OVER_BUDGET, code, disk.used())
            elif time.monotonic() >= next_disk_check:
                began = time.monotonic()
                used = tree_bytes(watched, budget)
                if used > budget:
                    log.warning("job %s: over its disk budget, killing it", job.job_id)
                    self.runner.kill(handle)
                    return ContainerEnd(Ending.OVER_BUDGET, self.runner.wait(handle, 30.0), used)
                took = time.monotonic() - began
                pause = min(
                    max(DISK_CHECK_MIN_SECONDS, took * DISK_CHECK_DUTY), DISK_CHECK_MAX_SECONDS
                )
                next_disk_check = began + pause
            grant = self.gateway.grant(job.job_id)
            if grant is not None and grant.over_budget:
                log.warning("job %s: over its token budget, stopping it", job.job_id)
                self.runner.stop(handle, self.config.stop_grace)
                return ContainerEnd(Ending.OVER_TOKENS, self.runner.wait(handle, 30.0))
            code = self.runner.wait(handle, min(remaining, WAIT_SLICE_SECONDS))
            steps.poll()  # a log line per agent step since the last slice
            if code is not None:
                # Once more now that nothing can write: what it left must fit too.
                if disk is not None:
                    over, used = disk.over(), disk.used()
                else:
                    used = tree_bytes(watched, budget)
                    over = used > budget
                return ContainerEnd(Ending.OVER_BUDGET if over else Ending.EXITED, code, used)

    def _collect(
        self, job: Claimed, spec: JobSpec, lease: Lease, handle: str, end: ContainerEnd,
        state: RunState, spent: Spent | None,
    ) -> Outcome:  # fmt: skip
        """The container has exited: make its outputs safe, save its work, judge it."""
        container = self.runner.inspect(handle)
        out_dir = self.spool.layout.out_dir(job.job_id)
        disk = self.disks.get(job.job_id) if state.disk_bound == FILESYSTEM else None
        budget = spec.disk or self.config.disk_budget
        used = end.disk_used if end.how in (Ending.EXITED, Ending.OVER_BUDGET) else None
        if disk is not None and used is None:
            used = disk.used()  # before out/ leaves it
        if end.how is Ending.OVER_BUDGET:  # give the space back; keep only the known files
            if disk is None:
                remove_tree(self.workspaces.path(job.job_id))
                self.homes.remove(job.job_id)
            make_safe(out_dir)
            keep_only_known(out_dir)
        # A filesystem-bound job's out/<id>/ moves onto the root's disk now, before the
        # daemon writes there (its patch, its record): results outlive the filesystem.
        removed_first = self.disks.settle_out(job.job_id) if disk is not None else []
        if end.how is Ending.OVER_BUDGET and disk is not None:
            self.disks.release(job.job_id)  # its workspace and home: the space back at once
        profile = AGENTS[spec.agent]
        self.homes.collect(job.job_id, profile, out_dir)
        removed = (*removed_first, *make_safe(out_dir))
        report = _agent_report(profile, out_dir)
        worker_reason = _worker_reason(out_dir)
        code = None if end.exit_code == NO_EXIT_CODE else end.exit_code
        state.exit_code = code
        if end.how is Ending.EXITED and not container.oom_killed:
            transient = ""
            if container.lost:  # its node or Engine went away under it (Swarm)
                transient = f"the container was lost: {container.error}"
            elif code in TRANSIENT_EXIT_CODES:
                transient = worker_reason or f"worker exited with transient code {code}"
            elif code is not None and (code > 128 or code == STOPPED_EXIT_CODE):
                # Neither its timeout nor the OOM killer: an Engine restart, someone's
                # `docker stop`. Another attempt may well succeed.
                transient = f"the container was stopped from outside ({_describe_exit(code, '')})"
            elif disk is not None and code and not self._host_has_room():
                # Its own filesystem had room (not over its budget) but the host's disk,
                # which holds the image, filled up under it: not the job's doing.
                transient = "the host's disk filled up under the job (its own filesystem had room)"
            if transient:
                self.runner.remove(handle)  # the next attempt reuses the name
                raise TransientFailure(transient)
        saved, save_problem = self._save_work(job, spec, state, out_dir)
        outcome = self._outcome(JobState.FAILED, "", state, saved=saved, removed=removed)
        outcome = outcome.with_agent(spec.agent, report).with_gateway(spent)
        outcome = outcome.with_disk(DiskBound(state.disk_bound or POLL, budget, used,
                                              state.disk_why))  # fmt: skip
        if end.how is Ending.CANCELLED:  # its work so far is saved above, as for any end
            return outcome.cancelled(end.cancelled_by)
        if end.how is Ending.OVER_TOKENS:
            budget = spec.token_budget or self.config.token_budget
            used = spent.input_tokens + spent.output_tokens if spent else 0
            return outcome.judged(JobState.FAILED, f"token budget exceeded: {used} tokens used "
                                  f"of {budget}; the container was stopped")  # fmt: skip
        if end.how is Ending.TIMED_OUT:
            return outcome.judged(JobState.TIMEOUT, f"timed out after {spec.timeout:.0f}s; "
                           "the container was stopped")  # fmt: skip
        if end.how is Ending.OVER_BUDGET and disk is not None:
            return outcome.judged(JobState.FAILED, f"disk budget exceeded: {end.disk_used} "
                                  f"bytes used of {budget} (its filesystem is full: writes past "
                                  "it failed with ENOSPC); the container was killed")  # fmt: skip
        if end.how is Ending.OVER_BUDGET:
            return outcome.judged(JobState.FAILED, f"disk budget exceeded: {end.disk_used} "
                           f"bytes used of {budget}; the container was killed")  # fmt: skip
        if container.oom_killed:  # any process, even when the agent itself exited 0
            return outcome.judged(JobState.FAILED, "out of memory: a process in the container "
                           "was killed by the kernel's OOM killer")  # fmt: skip
        if code is None and container.error and end.how is Ending.EXITED:
            # It never ran: the backend could not start it (a Swarm node rejected the task).
            return outcome.judged(JobState.FAILED, f"could not start the container: "
                                  f"{container.error[:1000]}")  # fmt: skip
        if code != 0:
            reason = worker_reason or _describe_exit(code, self.runner.logs_tail(handle, 5))
            if report.error and report.error not in reason:
                reason = f"{reason}: {report.error[:500]}"
            return outcome.judged(JobState.FAILED, reason)
        if save_problem:
            return outcome.judged(JobState.FAILED, save_problem)
        return outcome.judged(JobState.DONE, worker_reason or "finished")

    def _save_work(
        self, job: Claimed, spec: JobSpec, state: RunState, out_dir: Path
    ) -> tuple[SavedWork | None, str]:
        """The worker's bundle into the job's branch in repos/<key>.git, and changes.patch.
        Returns what was saved, or why nothing could be."""
        if state.commit_before is None:
            return None, "the job has no workspace record"
        branch = result_branch(job.job_id, spec)
        bundle = out_dir / "branch.bundle"
        try:
            results: Results = self.cache.take_results(
                spec.repo_url, bundle if bundle.is_file() else None, branch, state.commit_before
            )
            patch = out_dir / "changes.patch"
            budget = spec.disk or self.config.disk_budget
            self.cache.write_patch(
                spec.repo_url, state.commit_before, results.head, patch, limit=budget
            )
            folder = out_dir.stat()
            if os.geteuid() == 0:
                os.chown(patch, folder.st_uid, folder.st_gid)
        except RepoError as exc:
            return None, str(exc)
        bundle.unlink(missing_ok=True)  # its commits are in the results repository now
        saved = SavedWork(
            results_repo=str(self.cache.results_path(cache_key(spec.repo_url))),
            branch=results.branch,
            commit_before=state.commit_before,
            commit_after=results.head,
            commits=results.commits,
        )
        return saved, ""

    def _outcome(
        self, kind: JobState, reason: str, state: RunState, saved: SavedWork | None = None,
        removed: tuple[str, ...] = (),
    ) -> Outcome:  # fmt: skip
        return Outcome(
            kind, reason, attempts=state.attempts, exit_code=state.exit_code,
            started_at=state.started_at, saved=saved, removed_from_out=removed,
        )  # fmt: skip

    # -- the end -----------------------------------------------------------------------

    def finish(self, job: Claimed, outcome: Outcome) -> None:
        """exit.json first, then the move, then the container: a crash between any two
        steps is repaired at the next start without running the job again. The agent home
        and the workspace are dealt with before the move, so that
        nothing of a job that looks finished is still open."""
        # A job filesystem's out/<id>/ onto the root's disk (done already, unless the job
        # ended before its container did), its home off it.
        removed: list[str] = []
        if self.disks.has(job.job_id):
            removed = self.disks.settle_out(job.job_id)
            self.disks.drop_home(job.job_id)
        # First what needs no reading of what the agent left: drop the home, seal.
        self.homes.remove(job.job_id)
        self.workspaces.seal(job.job_id)
        out_dir = self.spool.layout.out_dir(job.job_id)
        removed += make_safe(out_dir) if out_dir.is_dir() else []
        if removed:
            outcome = outcome.with_removed(tuple(removed))
        self._file_audit(job.job_id, out_dir)
        origin = read_origin(self.spool.layout, job)  # a schedule's or hook's job: which
        write_exit_json(out_dir, job.job_id, job.source_name, outcome, origin)
        self.spool.finish(job, ok=outcome.state.ok)
        log.info("job %s: %s (%s)", job.job_id, outcome.state.value, outcome.reason)
        self.on_finished(job, self.config)  # queues notifications; never raises or blocks
        self.spool.drop_state(job.job_id)
        self.cancels.drop(job.job_id)  # done with, whatever ended the job
        # Nothing of a filed job is served: no grant, no relay's folder (one kept for it
        # since a restart, when it was filed without being opened again).
        self.gateway.close(job.job_id)
        # The job is filed: what is left needs no slot. Its exited container (the one this
        # life knows, else whatever the Engine has under its id) is removed behind it; a
        # crash first leaves a finished container of a filed job, which the next start
        # removes (Server._recover). A job just claimed that never reached _start has none.
        if job.container is not None or not job.fresh:
            self.cleaner.add(functools.partial(self._remove_container, job.job_id, job.container))
        self.cleaner.add(self._prune_workspaces, coalesce=True)

    def _file_audit(self, job_id: str, out_dir: Path) -> None:
        """The gateway's record of the job's calls, into its results as model-calls.jsonl
        (written by the daemon after the job: not the agent's to forge); its sockets' folder
        goes."""
        remove_tree(self.spool.layout.root / "run" / job_id)
        audit = self._audit_path(job_id)
        data = read_whole(audit, MAX_AUDIT_BYTES)
        if data is not None and out_dir.is_dir():
            folder = out_dir.stat()
            write_atomic(out_dir / "model-calls.jsonl", data, owner=(folder.st_uid, folder.st_gid))
        audit.unlink(missing_ok=True)

    def _remove_container(self, job_id: str, handle: str | None) -> None:
        try:
            handle = handle or self.runner.find(job_id)
            if handle is not None:
                self.runner.remove(handle)
        except RunnerError as exc:
            log.warning("job %s: container not removed yet (%s); removed at next start",
                        job_id, exc)  # fmt: skip

    def _prune_workspaces(self) -> None:
        if not self._pruning.acquire(blocking=False):
            return  # another thread is at it
        try:
            # Running jobs are asked for after each listing: a job claimed meanwhile (its
            # workspace, its filesystem made since) is running by then, or not listed.
            def running() -> set[str]:
                return set(self.spool.running_ids())

            def kept() -> set[str]:
                folder = self.workspaces.folder
                return running() | (set(os.listdir(folder)) if folder.is_dir() else set())

            # A workspace on its job's filesystem goes with it (unmounted, image deleted).
            self.workspaces.prune(running, remove=lambda path: self.disks.release(path.name))
            self.disks.prune(kept)
        except OSError as exc:
            log.warning("pruning workspaces: %s", exc)
        finally:
            self._pruning.release()


class Cleaner:
    """What is left of a filed job, done behind it so that it holds no slot: removing its
    exited container, pruning old workspaces. One thread, tasks in order. The queue is
    bounded: a slow Engine holds the job threads (and so their slots) back rather than
    piling up containers. Nothing here is needed for a job to run once: a crash loses the
    queue, the next start removes finished containers of filed jobs, and pruning runs
    again after the next job."""

    def __init__(self, limit: int = CLEANUP_QUEUE) -> None:
        self._tasks: queue.Queue[Callable[[], object] | None] = queue.Queue(maxsize=limit)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._coalesced: set[Callable[[], object]] = set()  # queued and not begun

    def add(self, task: Callable[[], object], coalesce: bool = False) -> None:
        """Queue ``task``; with ``coalesce``, not if the same task is queued already."""
        with self._lock:
            if coalesce:
                if task in self._coalesced:
                    return
                self._coalesced.add(task)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cleanup", daemon=True)
                self._thread.start()
        self._tasks.put(task)

    def close(self, grace: float) -> None:
        """Finish what is queued, for at most ``grace`` seconds (the rest: next start)."""
        with self._lock:
            thread = self._thread
        if thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._tasks.put(None, timeout=grace)
        thread.join(grace)

    def _run(self) -> None:
        while (task := self._tasks.get()) is not None:
            with self._lock:
                self._coalesced.discard(task)
            try:
                task()
            except Exception:
                log.exception("cleaning up after a job")


def _nothing(job: Claimed, config: Config) -> None:
    pass


def result_branch(job_id: str, spec: JobSpec) -> str:
    return spec.branch or f"watcherd/{job_id}"


MAX_EVENTS_BYTES = 64 * 1024 * 1024  # the agent's stream is read up to this much


def _agent_report(profile: AgentProfile, out_dir: Path) -> AgentReport:
    """What the agent's own event stream says (usage, session, error); never fails."""
    try:
        with (out_dir / "events.jsonl").open("rb") as events:
            lines = events.read(MAX_EVENTS_BYTES).decode("utf-8", "replace").splitlines()
    except OSError:
        return AgentReport()
    try:
        return profile.read_events(lines)
    except Exception as exc:  # the agent wrote it: a reader's bug must not end the job
        log.warning("could not read %s's events: %r", profile.name, exc)
        return AgentReport()


def _worker_reason(out_dir: Path) -> str:
    """The reason the worker image wrote into its exit.json, if any."""
    reason = read_worker_record(out_dir).get("reason")
    return str(reason)[:2000] if reason else ""


SIGRTMAX = 64  # above 128 + it, an exit code is no signal's (Docker's 255: containerd died)


def _describe_exit(code: int | None, logs: str) -> str:
    if code is None:
        return "the container's exit code is unknown"
    if 128 < code <= 128 + SIGRTMAX:
        return f"worker killed by signal {code - 128}"
    tail = logs.strip().splitlines()[-1:] if logs.strip() else []
    return f"worker exited with code {code}" + (f": {tail[0][:500]}" if tail else "")


def _relays(config: Config) -> Hub | None:
    """On Swarm, what serves a job's sockets on whichever node runs its task (README,
    Swarm): links on this node, and the relays of the others where the config has them."""
    if config.backend != "swarm":
        return None
    settings = config.relay
    return Hub(settings.sockets_dir, settings.listen,
               settings.credential_in(Layout(config.root).state))  # fmt: skip
