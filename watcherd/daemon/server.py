"""The daemon: start-up (recover, then watch), the main loop, shutdown.

Data flows one way: the watcher wakes the loop → the spool claims → a job
thread runs it → the spool finishes it. Signals only set flags and wake the loop
(watcherd/signals.py); the loop itself shuts down or reloads the config (SIGHUP).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import resource
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from watcherd.backends import EngineUnavailable, Runner, RunnerError, make_runner
from watcherd.config import Config
from watcherd.daemon.reload import reload_config
from watcherd.daemon.scheduler import Scheduler
from watcherd.daemon.sdnotify import Notifier, QueueCounts
from watcherd.daemon.signals import SignalRelay
from watcherd.job.auth import agent_logins, load_api_keys
from watcherd.job.life import DiskBoundUnavailable, Interrupted, JobLife
from watcherd.job.results import JobState, Outcome, write_exit_json
from watcherd.job.slots import Lease, StartGate
from watcherd.job.spec import InvalidJob, JobSpec, parse_job
from watcherd.notify.deliver import Notifications
from watcherd.publish import Publisher
from watcherd.spool.cancel import CancelRequest
from watcherd.spool.folders import Claimed, InboxEntry, Layout, Spool
from watcherd.spool.inbox import Inbox
from watcherd.spool.lookup import find_claim
from watcherd.spool.watch import InboxWatcher
from watcherd.triggers.schedules import Ticker as ScheduleTicker
from watcherd.util.fsutil import require_room
from watcherd.util.retry import Backoff

log = logging.getLogger("watcherd")
PR_SET_DUMPABLE = 4

WRITER_POLL_SECONDS = 0.1  # how often a job claimed while still being written is looked at
# A state file this old without a job is a crashed claim's (a claim takes milliseconds).
STALE_STATE_SECONDS = 5.0
NOTIFY_GRACE_SECONDS = 5.0  # at shutdown, for notifications still queued
CLEANUP_GRACE_SECONDS = 5.0  # at shutdown, for containers of filed jobs still to remove
CANCEL_POLL_SECONDS = 0.5  # how often cancel/ is looked at (a request acts within a second)
MAX_CLAIM_ROUNDS = 64  # rounds of ready files a turn looks at (each round leaves the set)


@dataclass
class _Active:
    job: Claimed
    spec: JobSpec
    lease: Lease | None  # None: holds no slot (prepared, or its container has exited)
    thread: threading.Thread
    gate: StartGate

    @property
    def prepared(self) -> bool:
        """Made ready ahead of a slot, never started yet."""
        return self.lease is None and not self.gate.ever_opened

    @property
    def wants_slot(self) -> bool:
        """Prepared (in claim order), or an attempt retried after its slot went back."""
        return self.lease is None and (self.prepared or self.gate.waiting)

    @property
    def handed_back(self) -> bool:
        """Its container has exited: its slot goes to the next job while it is filed."""
        return self.lease is not None and not self.gate.is_open


class Server:
    def __init__(
        self,
        config: Config,
        runner: Runner | None = None,
        reload: Callable[[], Config] | None = None,  # re-reads the config file (SIGHUP)
    ) -> None:
        self.config = config  # one frozen Config, swapped whole by a reload
        self._load_config = reload
        self._reload_requested = threading.Event()
        self._notifier = Notifier.from_environ()
        self._counts = QueueCounts()
        self.spool = Spool(Layout(config.root))
        self.runner: Runner = runner or make_runner(config)
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.exit_code = 0  # what `watcherd run` exits with
        self._wake = threading.Event()
        self._inbox = Inbox(config.settle_seconds, stat=self.spool.stat_inbox)
        self._watcher = InboxWatcher(self.spool.layout.inbox, self._wake)
        self._life = JobLife(config, self.spool, self.runner, self.stop_event)
        self._notifications = Notifications()
        # A filed job: its publish request first (README "Publishing"), then its notifications.
        self._publisher = Publisher(lambda: self.config, self._notifications.job_published)
        self._life.on_finished = self._publisher.chained(self._notifications.job_finished)
        self._scheduler = Scheduler(concurrency=config.concurrency)
        self._active: dict[str, _Active] = {}
        # Claimed, waiting for a slot: recovered orphans, and jobs claimed ahead that are not
        # prepared (a login's jobs: their login is chosen with their slot).
        self._pending: list[tuple[Claimed, JobSpec]] = []
        self._written_after_claim: list[Claimed] = []  # claimed while a writer had it open
        self._lock = threading.Lock()
        self._trouble = _Episode("main loop")
        self._disk_full = _Episode("disk")
        self._schedules = ScheduleTicker(self.spool.layout)  # the operator's schedules
        self._schedules_due = 0.0  # time.monotonic() of the next tick
        self._schedules_config: Config | None = None  # the config they were ticked with

    # -- lifecycle ---------------------------------------------------------------------

    def run(self, install_signal_handlers: bool = True) -> None:
        if install_signal_handlers:
            self._install_signal_handlers()
        try:
            if self.startup():
                self.main_loop()
        finally:
            self.shutdown()

    def stop(self) -> None:
        self.stop_event.set()
        self._wake.set()

    def request_reload(self) -> None:
        """Re-read the config at the main loop's next turn (SIGHUP)."""
        self._reload_requested.set()
        self._wake.set()

    def startup(self) -> bool:
        self.spool.layout.ensure()
        self._scheduler.logins = agent_logins(self.config)
        _keep_memory_private()
        self._life.api_keys = load_api_keys(self.config)  # held here and by the gateway only
        _ignore_lease_breaks()
        if not self._wait_for_engine():
            return False
        self._warn_without_live_restore()
        try:
            self._life.start_disks(set(self.spool.running_ids()))
        except DiskBoundUnavailable as exc:
            log.error("disk_bound is require, and job filesystems cannot be used here: %s "
                      "(README, Running jobs)", exc)  # fmt: skip
            self.exit_code = 1
            return False
        try:
            self._life.start_relays(self.spool.running_ids())
        except (ValueError, OSError) as exc:
            log.error("relays (config relay:, README Swarm): could not start: %s", exc)
            self.exit_code = 1
            return False
        self._recover()
        self._publisher.start()  # requests a crash left are done first
        self._watcher.start()
        self.ready.set()
        self._notifier.ready(self._status())
        log.info(
            "ready: watching %s (image %s, concurrency %d, backend %s, disk budgets %s)",
            self.spool.layout.inbox, self.config.image, self.config.concurrency,
            self.config.backend, "held" if self._life.disks.enabled else "polled",
        )  # fmt: skip
        return True

    def main_loop(self) -> None:
        next_rescan = 0.0
        while not self.stop_event.is_set():
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self._reload()
                next_rescan = 0.0  # rescan now, then every (new) rescan_seconds
            now = time.monotonic()
            pause = 0.0
            try:
                self._reap()
                self._act_on_cancels()
                self._inbox.note(self._watcher.drain(), now)
                if self._watcher.ensure_alive() or now >= next_rescan:
                    next_rescan = now + self.config.rescan_seconds
                    self._rescan(now)
                self._tick_schedules(now)
                self._dispatch()
                self._trouble.over()
            except (OSError, RunnerError) as exc:
                # A full disk, a vanished folder, the Engine away: waited out, never a
                # crash. Events may have been lost with the failed turn: rescan after.
                pause = self._trouble.backoff(exc)
                next_rescan = 0.0
            # The watchdog is fed here and nowhere else: a stalled loop stops the pings.
            self._notifier.tick(self._status())
            self._wake.wait(max(self._sleep_for(next_rescan, pause), 0.01))
            self._wake.clear()

    def _sleep_for(self, next_rescan: float, pause: float) -> float:
        now = time.monotonic()
        timeout = max(next_rescan - now, pause)
        deadline = self._inbox.next_deadline(now)
        if deadline is not None and not pause:
            timeout = min(timeout, deadline - now)
        if self._written_after_claim and not pause:
            timeout = min(timeout, WRITER_POLL_SECONDS)
        timeout = min(timeout, CANCEL_POLL_SECONDS)
        if self.config.schedules and not pause:
            timeout = min(timeout, self._schedules_due - now)
        ping_due = self._notifier.watchdog_due_in()
        if ping_due is not None:
            timeout = min(timeout, ping_due)
        return timeout

    def _rescan(self, now: float) -> None:
        """The safety net under the events, every rescan_seconds: the whole inbox again,
        jobs in running/ that no live process owns (a daemon died), stale records."""
        self._inbox.rescan(self.spool.scan_inbox(), now)
        self._adopt_orphans(self.runner.jobs(str(self.config.root)))
        self.spool.drop_stale_states(STALE_STATE_SECONDS)
        self._drop_stale_cancels()

    def _tick_schedules(self, now: float) -> None:
        """Due slots of the operator's schedules become job files (watcherd/triggers):
        at each slot's time, at least every minute, and at once after a reload."""
        if not self.config.schedules:
            return
        if now < self._schedules_due and self.config is self._schedules_config:
            return
        self._schedules_config = self.config
        self._schedules.tick(self.config, datetime.now(UTC))
        wait = self._schedules.seconds_to_next(self.config, datetime.now(UTC))
        self._schedules_due = time.monotonic() + wait + 0.05  # just past the slot

    def shutdown(self) -> None:
        self.stop_event.set()
        self._notifier.stopping("stopping; running containers keep going")
        self._watcher.stop()
        for active in list(self._active.values()):
            active.thread.join()
        self._reap()
        for job, _ in self._pending:
            job.release()
        self._pending.clear()
        for job in self._written_after_claim:
            job.release()
        self._written_after_claim.clear()
        self._life.gateway.stop()  # adopted at the next start, at the same sockets
        self._life.cleaner.close(grace=CLEANUP_GRACE_SECONDS)
        self._publisher.close(grace=NOTIFY_GRACE_SECONDS)  # the rest: at the next start
        self._notifications.close(grace=NOTIFY_GRACE_SECONDS)
        log.info("stopped; jobs still in running/ are adopted at the next start")

    def _install_signal_handlers(self) -> None:
        def stop(signum: signal.Signals) -> None:
            log.info("received %s, shutting down", signum.name)
            self.stop()

        def reload(signum: signal.Signals) -> None:
            log.info("received %s, reloading the config", signum.name)
            self.request_reload()

        SignalRelay({signal.SIGTERM: stop, signal.SIGINT: stop, signal.SIGHUP: reload}).install()

    def _reload(self) -> None:
        self._notifier.reloading()
        config = reload_config(self.config, self._load_config)
        # Everything that kept a piece of the config gets the same new one.
        self.config = config
        self._life.config = config
        self._scheduler.concurrency = config.concurrency
        self._inbox.settle_seconds = config.settle_seconds
        self._notifier.ready(self._status())

    def _status(self) -> str:
        self._counts.inbox = len(self._inbox)
        prepared = sum(a.prepared for a in self._active.values())
        self._counts.running = len(self._active) + len(self._pending) - prepared
        self._counts.prepared = prepared
        return self._counts.status_text()

    def _wait_for_engine(self) -> bool:
        def report(exc: BaseException, delay: float) -> None:
            log.warning("waiting for the Docker Engine: %s (retry in %.1fs)", exc, delay)
            self._notifier.status(f"waiting for the Docker Engine: {exc}")

        return Backoff(self.config.backoff_initial, self.config.backoff_max).wait_for(
            self.runner.ping, retry_on=EngineUnavailable, stop_event=self.stop_event,
            on_retry=report,
        )  # fmt: skip

    # -- recovery ----------------------------------------------------------------------

    def _warn_without_live_restore(self) -> None:
        if self.config.backend != "local":
            return  # Swarm mode cannot have it; a task lost with its Engine is run again
        try:
            if not self.runner.live_restore():
                log.warning(
                    "the Docker Engine runs without live-restore: restarting it kills running "
                    'jobs (they are run again, within their retries); add "live-restore": '
                    "true to /etc/docker/daemon.json (README, Running jobs)"
                )
        except RunnerError as exc:
            log.debug("could not ask the Engine about live-restore: %s", exc)

    def _recover(self) -> None:
        """Reconcile running/ with Docker before the first claim."""
        containers = self.runner.jobs(str(self.config.root))  # before listing running/
        running = self.spool.running_ids()
        for job_id, handle in containers.items():
            if job_id not in running:
                state = self.runner.inspect(handle)
                if state.finished or state.status == "created":
                    log.info("removing leftover container of finished job %s", job_id)
                    self.runner.remove(handle)
        self._adopt_orphans(containers)

    def _adopt_orphans(self, containers: Mapping[str, str]) -> None:
        """Jobs in running/ that no live process holds (their daemon died, or finishing
        one failed) become ours: at start-up and at every rescan. ``containers`` is listed
        before running/, so a job claimed meanwhile cannot look like an orphan."""
        for job in self.spool.orphans():
            spec = self._parse_or_fail(job)
            if spec is None:
                continue
            if job.job_id in containers and self.spool.read_state(job.job_id).prepared:
                log.info("taking over job %s: prepared, not started; queued first", job.job_id)
                self._pending.append((job, spec))  # started (never twice) when a slot frees
            elif job.job_id in containers:
                recorded = self.spool.read_state(job.job_id).auth_dir
                lease = self._scheduler.acquire(
                    spec.agent, force=True, auth_dir=_path_or_none(recorded)
                )
                assert lease is not None
                log.info("taking over job %s: its container exists", job.job_id)
                self._launch(job, spec, lease)
            else:
                log.info("taking over job %s: no container, queued to run again", job.job_id)
                self._pending.append((job, spec))

    # -- the main loop's work ----------------------------------------------------------

    def _dispatch(self) -> None:
        self._start_pending()
        self._open_gates()
        self._start_written_after_claim()
        for entry in self._inbox.take_specials():
            self._reject_special(entry)
        if not self._may_claim() or self.stop_event.is_set():
            return
        if not self._disk_has_room():
            return  # claiming now would only park jobs in running/: wait for space
        now = time.monotonic()
        # Again while there is room: a file found still open for writing leaves the ready
        # set, so files held open by their writers never keep the jobs behind them waiting.
        for _ in range(MAX_CLAIM_ROUNDS):
            room = self._scheduler.free_slots() + self._room_ahead()
            names = self._inbox.ready(now, room)
            if not names:
                return
            for name in names:
                if self.stop_event.is_set() or not self._may_claim():
                    return
                self._try_claim(name, now)

    def _may_claim(self) -> bool:
        """A slot is free, or every slot is busy and a job may be prepared ahead."""
        return self._scheduler.has_slot() or self._room_ahead() > 0

    def _room_ahead(self) -> int:
        """How many more claimed jobs may wait for a slot: ``prepare_ahead`` of them, less
        those waiting already (prepared, or claimed and waiting for a slot or a writer)."""
        waiting = sum(a.prepared for a in self._active.values())
        waiting += len(self._pending) + len(self._written_after_claim)
        return max(self.config.prepare_depth - waiting, 0)

    def _open_gates(self) -> None:
        """Prepared jobs start as slots free, in the order they were claimed."""
        for active in list(self._active.values()):
            if not active.wants_slot:
                continue
            lease = self._scheduler.acquire(active.spec.agent)
            if lease is None:
                return
            active.lease = lease
            active.gate.open()

    def _disk_has_room(self) -> bool:
        try:
            require_room(self.spool.layout.root, self.config.min_free_disk)
        except OSError as exc:
            self._disk_full.backoff(exc)  # not claiming until there is room
            return False
        self._disk_full.over()
        return True

    def _start_pending(self) -> None:
        waiting = []
        for job, spec in self._pending:
            cancel = self._life.cancels.for_job(job.job_id)
            if cancel is not None:  # claimed, never started: nothing to stop or save
                self._finish_cancelled(job, cancel)
                continue
            lease = self._scheduler.acquire(spec.agent)
            if lease is None:
                waiting.append((job, spec))
            else:
                self._launch(job, spec, lease)
        self._pending = waiting

    def _try_claim(self, name: str, now: float) -> None:
        if self.spool.has_writer(name):
            self._inbox.being_written(name, now)  # its close-after-write event will come
            return
        job = self.spool.claim(name)
        self._inbox.forget(name)
        if job is None:
            return
        log.info("claimed %s as job %s", name, job.job_id)
        cancel = self._life.cancels.for_entry(name, os.fstat(job.fd).st_ino)
        if cancel is not None:  # cancelled while queued: filed, never run
            self._life.cancels.drop(cancel)
            self._finish_cancelled(job, cancel)
            return
        if job.has_writer():
            # Opened for writing between the check and the claim: the job is ours, but its
            # bytes are read once its writer is done, never half-written.
            self._written_after_claim.append(job)
            return
        self._start_claimed(job)

    def _start_written_after_claim(self) -> None:
        waiting = []
        for job in self._written_after_claim:
            if job.has_writer():
                waiting.append(job)
                continue
            if not self._scheduler.has_slot():
                waiting.append(job)
                continue
            job.reread()
            self._start_claimed(job)
        self._written_after_claim = waiting

    def _start_claimed(self, job: Claimed) -> None:
        """A claimed job runs now if a slot is free (with a login, if its agent uses one),
        else it is prepared ahead; a login's job, whose login comes with its slot, waits
        claimed, first in line."""
        spec = self._parse_or_fail(job)
        if spec is None:
            return
        lease = self._scheduler.acquire(spec.agent)
        if lease is not None:
            self._launch(job, spec, lease)
        elif spec.agent not in self._scheduler.logins and self.config.prepare_depth:
            self._launch(job, spec, None)  # prepared now, started through its gate
        else:
            self._pending.append((job, spec))

    # -- cancel ------------------------------------------------------------------------

    def _act_on_cancels(self) -> None:
        """Requests for queued jobs: the entry is claimed here and filed as cancelled (a
        claim is a rename: if another daemon claimed it first, that one files it, or runs
        it and turns the request into one for its id). Running jobs' requests are seen by
        their own life (JobLife._wait); pending jobs' by _start_pending."""
        for request in self._life.cancels.queued():
            assert request.name is not None and request.inode is not None
            entry = self.spool.stat_inbox(request.name)
            if entry is not None and entry.signature[0] == request.inode:
                self._try_claim(request.name, time.monotonic())  # files it: see there
                continue
            job_id = find_claim(self.spool.layout, request.name, request.inode)
            if job_id is not None and job_id in self.spool.running_ids():
                self._life.cancels.request(dataclasses.replace(request, job_id=job_id))
            self._life.cancels.drop(request)  # acted on, handed on, or its job is gone

    def _finish_cancelled(self, job: Claimed, cancel: CancelRequest) -> None:
        log.info("job %s (%s): cancelled by %s before it ran", job.job_id, job.source_name,
                 cancel.by)  # fmt: skip
        try:
            self._life.finish(job, Outcome(JobState.FAILED, "").cancelled(cancel.by))
        except OSError:
            job.release()  # left in running/: the next rescan adopts it, and sees the request
            raise
        self._counts.finished(ok=False)

    def _drop_stale_cancels(self) -> None:
        """A request whose job ended before it was acted on, or was never claimed."""
        running = self.spool.running_ids()
        for request in self._life.cancels.all():
            if request.job_id is not None and request.job_id not in running:
                self._life.cancels.drop(request)

    def _parse_or_fail(self, job: Claimed) -> JobSpec | None:
        try:
            return parse_job(job.data, self.config)
        except InvalidJob as exc:
            log.warning("job %s (%s) is invalid: %s", job.job_id, job.source_name, exc)
            try:
                self._life.finish(job, Outcome(JobState.INVALID, f"{job.source_name}: {exc}"))
            except OSError:
                job.release()  # left in running/: the next rescan finishes it
                raise
            self._counts.finished(ok=False)
            return None

    def _reject_special(self, entry: InboxEntry) -> None:
        job_id = self.spool.reject_special(entry)
        if job_id is None:
            return
        reason = (
            f"{entry.name}: is a {entry.kind}, not a regular file; moved to failed/ "
            "without being opened or followed"
        )
        log.warning("job %s: %s", job_id, reason)
        outcome = Outcome(JobState.INVALID, reason)
        write_exit_json(self.spool.layout.out_dir(job_id), job_id, entry.name, outcome)
        self._notifications.notify(self.config, job_id, None)  # invalid: the defaults only
        self._counts.finished(ok=False)

    def _launch(self, job: Claimed, spec: JobSpec, lease: Lease | None) -> None:
        """Its thread, now; with ``lease`` None, it is prepared and waits for a slot (only
        a job whose agent leases no login: the lease is a slot then, and nothing more)."""
        gate = StartGate(self._wake.set)
        if lease is not None:
            gate.open()
        if lease is not None and lease.auth_dir is not None:
            state = self.spool.read_state(job.job_id, job.source_name)
            state.auth_dir = str(lease.auth_dir)
            self.spool.write_state(job.job_id, state)
        thread = threading.Thread(
            target=self._run_job, args=(job, spec, lease or Lease(), gate),
            name=f"job-{job.job_id}", daemon=True,
        )  # fmt: skip
        with self._lock:
            self._active[job.job_id] = _Active(job, spec, lease, thread, gate)
        thread.start()

    def _run_job(self, job: Claimed, spec: JobSpec, lease: Lease, gate: StartGate) -> None:
        try:
            outcome = self._life.run(job, spec, lease, gate)
            if outcome is not None:  # None: interrupted by shutdown, left in running/
                self._counts.finished(outcome.state.ok)
        except Interrupted:
            job.release()
        except Exception:
            # JobLife.run turns errors into a failed job; this is finish() itself failing
            # (the disk, say): the job stays in running/ for the next start to finish.
            log.exception("job %s: could not be finished; left in running/", job.job_id)
            job.release()
        finally:
            self._wake.set()

    def _reap(self) -> None:
        with self._lock:
            finished = [a for a in self._active.values() if not a.thread.is_alive()]
            for active in finished:
                del self._active[active.job.job_id]
        for active in finished:
            self._release_slot(active)
        for active in self._active.values():
            if active.handed_back:
                self._release_slot(active)

    def _release_slot(self, active: _Active) -> None:
        if active.lease is not None:  # a job that ended prepared, or handed it back, has none
            self._scheduler.release(active.lease)
            active.lease = None


class _Episode:
    """A condition the daemon waits out (a full disk, a failing loop): logged once when
    it starts and once when it is over, with a growing pause in between."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    def backoff(self, exc: Exception) -> float:
        if self.failures == 0:
            log.error("%s: %s; waiting it out", self.what, exc)
        self.failures += 1
        return float(min(0.5 * 2 ** min(self.failures, 6), 30.0))

    def over(self) -> None:
        if self.failures:
            log.info("%s: recovered after %d failed turn(s)", self.what, self.failures)
            self.failures = 0


def _ignore_lease_breaks() -> None:
    """Spool.has_writer holds a read lease for a moment; a writer opening the file then
    would send SIGIO, whose default action ends the process."""
    with contextlib.suppress(ValueError):  # not the main thread (tests): nothing to do
        signal.signal(signal.SIGIO, signal.SIG_IGN)


def _keep_memory_private() -> None:
    """The daemon holds the operator's keys: no core dump of it, and no process of its user
    may ptrace it or read its memory (PR_SET_DUMPABLE 0 does both)."""
    with contextlib.suppress(OSError, AttributeError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def _path_or_none(value: object) -> Path | None:
    return Path(value) if isinstance(value, str) else None
