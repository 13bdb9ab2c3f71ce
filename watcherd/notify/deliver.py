"""Telling others that a job ended: its exit record, as JSON, to the configured webhooks
(signed) and commands, once the job file has moved to done/ or failed/ (JobLife.finish
calls ``job_finished``), invalid jobs included.

Never in the way of the daemon or a job: finishing a job only puts deliveries on a
bounded queue; a few worker threads deliver them, each retried with backoff (tenacity)
for a minute or so. Failures are logged with the target's name, never its URL (which may
hold a token) nor its secret. Nothing is persisted: what is still queued when the daemon
stops is logged as dropped. The same record is on disk (out/<id>/exit.json, ``watcherd
wait``), so a receiver that missed one can always ask.

The webhook's signature is ``X-Watcherd-Signature: sha256=<hex>``, the HMAC-SHA256 of the
exact request body keyed with the bytes of ``secret_file`` (surrounding whitespace
stripped); README "Notifications" shows how a receiver checks it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import os
import queue
import signal
import stat
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tenacity

from watcherd import __version__
from watcherd.config import Config
from watcherd.config.notify import CommandTarget, NotifyTarget, WebhookTarget
from watcherd.job.events import one_line
from watcherd.job.spec import InvalidJob, parse_job
from watcherd.spool.folders import Claimed, Layout
from watcherd.util.safeio import read_json_object

log = logging.getLogger("watcherd.notify")

SIGNATURE_HEADER = "X-Watcherd-Signature"
QUEUE_SIZE = 256  # deliveries waiting; more are dropped (and logged), never waited for
WORKERS = 2
ATTEMPTS = 5  # per delivery: 1 + 4 retries, about a minute with the backoff
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
SECRET_LIMIT = 4096


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """What a receiver does: compare in constant time."""
    return hmac.compare_digest(sign(secret, body), header)


class DeliveryFailed(Exception):
    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Delivery:
    target: NotifyTarget
    job_id: str
    state: str
    body: bytes
    event: str = "job.finished"  # or job.published (watcherd/publish/)


def targets_for(config: Config, job_data: bytes | None) -> list[NotifyTarget]:
    """The config's defaults, then the job's own (a job that does not parse: the defaults)."""
    names = list(config.notify_default)
    if job_data is not None:
        with contextlib.suppress(InvalidJob):
            names += parse_job(job_data, config).notify
    return [config.notify[name] for name in dict.fromkeys(names) if name in config.notify]


class Notifications:
    def __init__(
        self,
        workers: int = WORKERS,
        queue_size: int = QUEUE_SIZE,
        attempts: int = ATTEMPTS,
        backoff: tuple[float, float] = (BACKOFF_INITIAL, BACKOFF_MAX),
    ) -> None:
        self._workers = workers
        self._queue: queue.Queue[Delivery | None] = queue.Queue(queue_size)
        self._attempts = attempts
        self._backoff = backoff
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._busy = 0  # deliveries taken by a worker and not done yet

    # -- the hook --------------------------------------------------------------------

    def job_finished(self, job: Claimed, config: Config) -> None:
        """JobLife.finish's hook: the job file has just moved."""
        self.notify(config, job.job_id, job.data)

    def job_published(self, config: Config, job_id: str, job_data: bytes | None) -> None:
        """The publisher's hook: the job's ``publish`` outcome is in its record now."""
        self.notify(config, job_id, job_data, event="job.published")

    def notify(
        self, config: Config, job_id: str, job_data: bytes | None, event: str = "job.finished"
    ) -> None:
        """Queue the job's record for each of its targets. Never raises, never blocks."""
        try:
            targets = targets_for(config, job_data)
            if not targets:
                return
            record = read_json_object(Layout(config.root).out_dir(job_id) / "exit.json")
            record = record or {"job_id": job_id, "state": "unknown"}
            body = json.dumps(record, sort_keys=True).encode()
            self._start_workers()
            for target in targets:
                delivery = Delivery(target, job_id, str(record.get("state")), body, event)
                try:
                    self._queue.put_nowait(delivery)
                except queue.Full:
                    log.error("job %s: notification to %s dropped: %d already waiting",
                              job_id, target.name, self._queue.qsize())  # fmt: skip
        except Exception:  # a notification must never fail the job
            log.exception("job %s: could not queue its notifications", job_id)

    # -- the workers -----------------------------------------------------------------

    def _start_workers(self) -> None:
        with self._lock:
            if self._threads or self._closing.is_set():
                return
            for number in range(self._workers):
                thread = threading.Thread(target=self._work, name=f"notify-{number}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None:
                return
            with self._lock:
                self._busy += 1
            try:
                self._deliver(delivery)
            except Exception:
                log.exception("job %s: notifying %s failed", delivery.job_id,
                              delivery.target.name)  # fmt: skip
            finally:
                with self._lock:
                    self._busy -= 1

    def _deliver(self, delivery: Delivery) -> None:
        send = _sender(delivery)
        initial, maximum = self._backoff

        def note_retry(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.info("job %s: notifying %s failed (%s); retrying", delivery.job_id,
                     delivery.target.name, error)  # fmt: skip

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda exc: isinstance(exc, DeliveryFailed) and exc.transient
            ),
            stop=tenacity.stop_any(
                tenacity.stop_after_attempt(self._attempts),
                tenacity.stop_when_event_set(self._closing),
            ),
            wait=tenacity.wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial),
            sleep=self._pause,
            before_sleep=note_retry,
            reraise=True,
        )
        began = time.monotonic()
        try:
            attempts = 0
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    send()
        except DeliveryFailed as exc:
            log.warning("job %s: notifying %s failed after %d attempt(s): %s", delivery.job_id,
                        delivery.target.name, attempts, exc)  # fmt: skip
            return
        log.info("job %s: notified %s (%.1fs)", delivery.job_id, delivery.target.name,
                 time.monotonic() - began)  # fmt: skip

    def _pause(self, seconds: float) -> None:
        self._closing.wait(seconds)  # a stopping daemon cuts the backoff short

    def close(self, grace: float) -> None:
        """Give what is queued ``grace`` seconds, then stop; log what was dropped."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._lock:
                idle = self._busy == 0
            if idle and self._queue.empty():
                break
            time.sleep(0.05)
        self._closing.set()
        dropped: list[str] = []
        while True:
            try:
                delivery = self._queue.get_nowait()
            except queue.Empty:
                break
            if delivery is not None:
                dropped.append(f"{delivery.job_id} to {delivery.target.name}")
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=1.0)
        if dropped:
            log.warning("stopping: %d notification(s) not sent: %s", len(dropped),
                        "; ".join(dropped))  # fmt: skip


def _sender(delivery: Delivery) -> Callable[[], None]:
    target = delivery.target
    if isinstance(target, WebhookTarget):
        return lambda: post_webhook(target, delivery.body, delivery.job_id, delivery.event)
    return lambda: run_command(target, delivery.body, delivery.job_id, delivery.state,
                               delivery.event)  # fmt: skip


# -- webhooks --------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: the record goes to the URL configured, nowhere else."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def read_secret(path: Path) -> bytes:
    """The webhook secret: the file's bytes, whitespace around them stripped. The file must
    be private (no group or other bits), as api_key_file must."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise DeliveryFailed(f"secret_file {path} is not a regular file", transient=False)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise DeliveryFailed(f"secret_file {path} is readable by others; chmod 600 it",
                                 transient=False)  # fmt: skip
        with path.open("rb") as handle:
            secret = handle.read(SECRET_LIMIT + 1).strip()
    except OSError as exc:
        raise DeliveryFailed(f"secret_file {path}: {exc.strerror}", transient=False) from None
    if not secret or len(secret) > SECRET_LIMIT:
        raise DeliveryFailed(f"secret_file {path} is empty or too long", transient=False)
    return secret


def post_webhook(
    target: WebhookTarget, body: bytes, job_id: str, event: str = "job.finished"
) -> None:
    request = urllib.request.Request(
        target.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": f"watcherd/{__version__}",
            "X-Watcherd-Event": event,
            "X-Watcherd-Job": job_id,
            SIGNATURE_HEADER: sign(read_secret(target.secret_file), body),
        },
    )
    try:
        with _OPENER.open(request, timeout=target.timeout) as response:
            response.read(4096)
    except urllib.error.HTTPError as exc:
        transient = exc.code >= 500 or exc.code in (408, 425, 429)
        raise DeliveryFailed(f"HTTP {exc.code}", transient) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise DeliveryFailed(f"no answer: {reason}", transient=True) from None


# -- commands --------------------------------------------------------------------------


def run_command(
    target: CommandTarget, body: bytes, job_id: str, state: str, event: str = "job.finished"
) -> None:
    """``argv`` with the record on stdin, in a session of its own (a timeout kills it and
    whatever it started), WATCHERD_JOB_ID, WATCHERD_JOB_STATE and WATCHERD_EVENT set."""
    env = {**os.environ, "WATCHERD_JOB_ID": job_id, "WATCHERD_JOB_STATE": state,
           "WATCHERD_EVENT": event}  # fmt: skip
    with tempfile.TemporaryFile() as errors:
        try:
            process = subprocess.Popen(
                target.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors,
                env=env, start_new_session=True, close_fds=True,
            )  # fmt: skip
        except OSError as exc:
            raise DeliveryFailed(f"cannot run {target.argv[0]}: {exc.strerror}",
                                 transient=False) from None  # fmt: skip
        try:
            process.communicate(body, timeout=target.timeout)
        except subprocess.TimeoutExpired:
            _kill_session(process)
            raise DeliveryFailed(f"timed out after {target.timeout:g}s", transient=True) from None
        if process.returncode != 0:
            errors.seek(0, os.SEEK_END)
            errors.seek(max(0, errors.tell() - 500))
            said = one_line(errors.read().decode("utf-8", "replace"), 300)
            raise DeliveryFailed(f"exited with {process.returncode}: {said}", transient=True)


def _kill_session(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
