"""The daemon: start-up (recover, then watch), the main loop, shutdown.

Data flows one way: the watcher wakes the loop → the spool claims → a job
thread runs it → the spool finishes it. Signals only set flags and wake the loop
(watcherd/signals.py); the loop itself shuts down or reloads the config (SIGHUP).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watcherd.auth import load_api_key, login_dirs
from watcherd.config import Config
from watcherd.job import InvalidJob, JobSpec, parse_job
from watcherd.jobrun import Interrupted, JobLife, Lease
from watcherd.reload import reload_config
from watcherd.results import JobState, Outcome, write_exit_json
from watcherd.retry import Backoff
from watcherd.runner import DockerRunner, EngineUnavailable, Runner
from watcherd.scheduler import Scheduler
from watcherd.sdnotify import Notifier, QueueCounts
from watcherd.settle import SettleTracker
from watcherd.signals import SignalRelay
from watcherd.spool import Claimed, InboxEntry, Layout, Spool
from watcherd.watch import InboxWatcher

log = logging.getLogger("watcherd")


@dataclass
class _Active:
    job: Claimed
    spec: JobSpec
    lease: Lease
    thread: threading.Thread


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
        self.runner: Runner = runner or DockerRunner(config.docker_host)
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self._wake = threading.Event()
        self._settle = SettleTracker(config.settle_seconds)
        self._watcher = InboxWatcher(self.spool.layout.inbox, self._wake)
        self._life = JobLife(config, self.spool, self.runner, self.stop_event)
        self._scheduler = Scheduler(concurrency=config.concurrency)
        self._active: dict[str, _Active] = {}
        self._pending: list[tuple[Claimed, JobSpec]] = []  # recovered, waiting for a slot
        self._lock = threading.Lock()

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
        self._scheduler.auth_dirs = login_dirs(self.config)
        self._scheduler.api_key = load_api_key(self.config)
        if not self._wait_for_engine():
            return False
        self._recover()
        self._watcher.start()
        self.ready.set()
        self._notifier.ready(self._status())
        log.info(
            "ready: watching %s (image %s, concurrency %d)",
            self.spool.layout.inbox, self.config.image, self.config.concurrency,
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
            self._reap()
            if self._watcher.ensure_alive() or now >= next_rescan:
                next_rescan = now + self.config.rescan_seconds
            self._dispatch()
            # The watchdog is fed here and nowhere else: a stalled loop stops the pings.
            self._notifier.tick(self._status())
            deadline = self._settle.next_deadline(time.monotonic())
            timeout = next_rescan - time.monotonic()
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
            ping_due = self._notifier.watchdog_due_in()
            if ping_due is not None:
                timeout = min(timeout, ping_due)
            self._wake.wait(max(timeout, 0.01))
            self._wake.clear()

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
        self._settle.settle_seconds = config.settle_seconds
        self._notifier.ready(self._status())

    def _status(self) -> str:
        self._counts.inbox = len(self._settle)  # the last scan, less what was claimed since
        self._counts.running = len(self._active) + len(self._pending)
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
        for job in self.spool.orphans():
            spec = self._parse_or_fail(job)
            if spec is None:
                continue
            if job.job_id in containers:
                recorded = self.spool.read_state(job.job_id).auth_dir
                lease = self._scheduler.acquire(force=True, auth_dir=_path_or_none(recorded))
                assert lease is not None
                log.info("recovering job %s: its container exists", job.job_id)
                self._launch(job, spec, lease)
            else:
                log.info("recovering job %s: no container, queued to run again", job.job_id)
                self._pending.append((job, spec))

    # -- the main loop's work ----------------------------------------------------------

    def _dispatch(self) -> None:
        self._start_pending()
        entries = self.spool.scan_inbox()
        for entry in entries:
            if not entry.is_regular:
                self._reject_special(entry)
        ready = set(
            self._settle.observe(
                ((e.name, e.signature) for e in entries if e.is_regular), time.monotonic()
            )
        )
        for entry in entries:
            if self.stop_event.is_set() or not self._scheduler.has_slot():
                return
            if entry.name in ready:
                self._try_claim(entry)

    def _start_pending(self) -> None:
        while self._pending:
            lease = self._scheduler.acquire()
            if lease is None:
                return
            job, spec = self._pending.pop(0)
            self._launch(job, spec, lease)

    def _try_claim(self, entry: InboxEntry) -> None:
        lease = self._scheduler.acquire()
        if lease is None:
            return  # no slot or no free login: it waits in the inbox, for us or another daemon
        job = self.spool.claim(entry.name)
        self._settle.forget(entry.name)
        if job is None:
            self._scheduler.release(lease)
            return
        log.info("claimed %s as job %s", entry.name, job.job_id)
        spec = self._parse_or_fail(job)
        if spec is None:
            self._scheduler.release(lease)
            return
        self._launch(job, spec, lease)

    def _parse_or_fail(self, job: Claimed) -> JobSpec | None:
        try:
            return parse_job(job.data, self.config)
        except InvalidJob as exc:
            log.warning("job %s (%s) is invalid: %s", job.job_id, job.source_name, exc)
            self._life.finish(job, Outcome(JobState.INVALID, f"{job.source_name}: {exc}"))
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
        self._counts.finished(ok=False)

    def _launch(self, job: Claimed, spec: JobSpec, lease: Lease) -> None:
        if lease.auth_dir is not None:
            state = self.spool.read_state(job.job_id, job.source_name)
            state.auth_dir = str(lease.auth_dir)
            self.spool.write_state(job.job_id, state)
        thread = threading.Thread(
            target=self._run_job, args=(job, spec, lease), name=f"job-{job.job_id}", daemon=True
        )
        with self._lock:
            self._active[job.job_id] = _Active(job, spec, lease, thread)
        thread.start()

    def _run_job(self, job: Claimed, spec: JobSpec, lease: Lease) -> None:
        try:
            outcome = self._life.run(job, spec, lease)
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
            self._scheduler.release(active.lease)


def _path_or_none(value: object) -> Path | None:
    return Path(value) if isinstance(value, str) else None
