"""Publishing a finished job: its branch pushed to its repository's forge and its pull
request opened (or found and updated), by the daemon, after the job is filed, never in a
job's container. Idempotent: publishing again pushes nothing new and finds the same pull
request. A failure is the publish record's (``publish.state``), never the job's: a done
job stays done.

One thread takes the requests in ``publish/requests/`` (watcherd/publish/requests.py):
those a job makes when it is filed asking to be published, and those of ``watcherd
publish``. Each is done under the job's lock, its outcome written into exit.json, and told
as a ``job.published`` notification.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watcherd.config import Config
from watcherd.config.publish import ForgeSettings, PublishSettings
from watcherd.job.results import JobState, utc_now
from watcherd.job.spec import InvalidJob, JobSpec, parse_job
from watcherd.publish.branch import (
    PushFailed,
    Refused,
    Work,
    check_branch_name,
    check_work,
    is_branch,
    push,
    remote_head,
)
from watcherd.publish.credentials import CredentialError, Secret
from watcherd.publish.forge import Forge, ForgeError, RepoId
from watcherd.publish.forges import FORGES
from watcherd.publish.record import job_lock, read_record, write_publish
from watcherd.publish.requests import Request, drop_request, listed, parse_request
from watcherd.publish.text import pull_text, summary_of
from watcherd.repo.cache import cache_key
from watcherd.repo.url import redact, repo_host, repo_path
from watcherd.spool.folders import MAX_JOB_BYTES, Claimed, Layout
from watcherd.util.safeio import read_regular

log = logging.getLogger("watcherd.publish")

POLL_SECONDS = 0.5  # how often the publisher looks for requests (a filed job wakes it)
RETRY_PAUSES = (2.0, 5.0, 15.0, 30.0)  # before the 2nd, 3rd, ... try of a transient failure
_OBJECT_ID = frozenset("0123456789abcdef")

OnPublished = Callable[[Config, str, bytes | None], None]


class Stopped(Exception):
    """The daemon is stopping between two tries: the request stays for the next start."""


# -- one job ----------------------------------------------------------------------------


def publish_job(
    config: Config, job_id: str, asked: str | None, stop: threading.Event | None = None,
    pauses: tuple[float, ...] = RETRY_PAUSES, fallback: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Publish one ended job: as ``asked``, else as it was published before, else as its
    publish: (or its repository's default) says, else as ``fallback``. The publish record
    (state, reason, url, ...), which the caller writes. Stopped when ``stop`` is set while
    it waits to try again."""
    layout = Layout(config.root)
    try:
        return _publish(config, layout, job_id, asked, stop or threading.Event(), pauses,
                        fallback)  # fmt: skip
    except Refused as exc:
        return {"state": "refused", "reason": str(exc)}


def _publish(
    config: Config, layout: Layout, job_id: str, asked: str | None, stop: threading.Event,
    pauses: tuple[float, ...], fallback: str | None,
) -> dict[str, Any]:  # fmt: skip
    settings = config.publish
    record = read_record(layout.out_dir(job_id))
    if record is None:
        return {"state": "skipped", "reason": "the job has no exit record (not ended yet?)"}
    spec = _spec(config, layout, job_id)
    before = record.get("publish")
    earlier = before.get("as") if isinstance(before, dict) else None
    mode = asked or (earlier if earlier in ("branch", "draft", "ready") else None)
    mode = mode or settings.mode_for(spec.repo_url, spec.publish)
    if mode == "none" and fallback is not None:
        mode = fallback
    if mode == "none":
        return {"as": mode, "state": "skipped", "reason": "publish: none (the job's, or its "
                "repository's default); `watcherd publish --as draft` publishes it"}  # fmt: skip
    state = record.get("state")
    if state != JobState.DONE.value:
        return {"as": mode, "state": "skipped",
                "reason": f"the job ended {state}; only a done job is published"}  # fmt: skip
    before, after = _commit(record, "commit_before"), _commit(record, "commit_after")
    if before == after:
        return {"as": mode, "state": "skipped",
                "reason": "the job made no commits: nothing to publish"}  # fmt: skip
    forge_settings, repo = _forge_and_repo(settings, spec.repo_url)
    remote_branch = settings.branch_prefix + (spec.branch or job_id)
    check_branch_name(remote_branch, spec.branch, protected=settings.protected_branches,
                      base=spec.repo_ref)  # fmt: skip
    key = cache_key(spec.repo_url)
    work = Work(layout.repos / f"{key}.git", before, after)
    commits = check_work(work, settings, settings.protected_paths_allowed(spec.repo_url))
    facts = {"as": mode, "branch": remote_branch, "commit": after, "commits": commits,
             "remote": repo.web_url}  # fmt: skip
    for attempt, pause in enumerate((0.0, *pauses[: settings.retries]), 1):
        if pause and stop.wait(pause):
            raise Stopped(f"job {job_id}: stopping before publishing try {attempt}")
        forge = FORGES[forge_settings.type](forge_settings, repo, settings.timeout)
        progress: dict[str, Any] = {}  # what got done before a failure: pushed, base
        try:
            done = _to_forge(config, forge, spec, record, job_id, work, remote_branch, mode,
                             asked, layout, key, progress)  # fmt: skip
            return {**facts, **done, "attempts": attempt}
        except (ForgeError, PushFailed) as exc:
            reason = _scrubbed(str(exc), forge.secrets())
            if exc.transient and attempt <= min(len(pauses), settings.retries):
                log.info("job %s: publishing failed (%s); trying again", job_id, reason)
                continue
            more = " (transient; gave up)" if exc.transient else ""
            return {**facts, **progress, "state": "failed", "attempts": attempt,
                    "reason": reason + more}  # fmt: skip
        except CredentialError as exc:
            return {**facts, **progress, "state": "failed", "attempts": attempt,
                    "reason": _scrubbed(str(exc), forge.secrets())}  # fmt: skip
        except Refused as exc:
            return {**facts, **progress, "state": "refused", "attempts": attempt,
                    "reason": str(exc)}  # fmt: skip
    raise AssertionError("unreachable")  # pragma: no cover


def _to_forge(
    config: Config, forge: Forge, spec: JobSpec, record: dict[str, Any], job_id: str,
    work: Work, remote_branch: str, mode: str, asked: str | None, layout: Layout, key: str,
    progress: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The network part: the forge's default branch, the push, the pull request."""
    settings = config.publish
    default = forge.default_branch()
    cache = layout.root / "cache" / f"{key}.git"
    base = spec.repo_ref if spec.repo_ref and is_branch(cache, spec.repo_ref) else default
    check_branch_name(remote_branch, spec.branch, protected=settings.protected_branches,
                      default_branch=default, base=base)  # fmt: skip
    credential = forge.git_credential()
    url, protocols = forge.repo.git_url, config.allowed_protocols
    at = remote_head(work.repo, url, remote_branch, credential, protocols, settings.push_timeout)
    pushed = at != work.after
    progress["base"] = base
    if pushed:
        push(work, url, remote_branch, credential, remote_at=at, protocols=protocols,
             timeout=settings.push_timeout)  # fmt: skip
        log.info("job %s: pushed %s to %s of %s", job_id, work.after[:12], remote_branch,
                 forge.repo.web_url)  # fmt: skip
    progress["pushed"] = pushed
    done: dict[str, Any] = {"pushed": pushed, "base": base}
    if mode == "branch":
        return {**done, "state": "pushed", "url": forge.branch_url(remote_branch)}
    title, body = pull_text(settings, spec, record, job_id,
                            summary_of(layout.out_dir(job_id)), remote_branch)  # fmt: skip
    want_draft = mode == "draft"
    pull = forge.find_pull(remote_branch)
    if pull is None:
        pull = forge.create_pull(head=remote_branch, base=base, title=title, body=body,
                                 draft=want_draft)  # fmt: skip
        log.info("job %s: opened pull request %s", job_id, pull.url)
    else:
        if (pull.title, pull.body.replace("\r\n", "\n")) != (title, body):
            pull = forge.update_pull(pull, title=title, body=body)
        # A draft made ready by a person stays so, unless this publish asked for a draft.
        if asked is not None and pull.draft != want_draft:
            pull = forge.set_draft(pull, want_draft)
        log.info("job %s: pull request %s is up to date", job_id, pull.url)
    return {**done, "state": "published", "url": pull.url, "number": pull.number,
            "draft": pull.draft, "base": pull.base or base}  # fmt: skip


def _spec(config: Config, layout: Layout, job_id: str) -> JobSpec:
    for folder in (layout.done, layout.failed):
        data = read_regular(folder / f"{job_id}.yaml", MAX_JOB_BYTES + 1)
        if data is not None:
            try:
                return parse_job(data, config)
            except InvalidJob as exc:
                raise Refused(f"the job file does not pass the config now: {exc}") from None
    raise Refused("the job is not in done/ or failed/")


def _commit(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or len(value) not in (40, 64) or not set(value) <= _OBJECT_ID:
        raise Refused(f"the job's record has no {key} (its work was not saved)")
    return value


def _forge_and_repo(settings: PublishSettings, url: str) -> tuple[ForgeSettings, RepoId]:
    host = repo_host(url)
    forge = settings.forge_for(host) if host else None
    if host is None or forge is None:
        configured = ", ".join(sorted(settings.forges)) or "none are configured"
        raise Refused(f"no forge is configured for {host or redact(url)} (publish.forges: "
                      f"{configured}), so no credential either")  # fmt: skip
    parts = repo_path(url).split("/")
    if len(parts) != 2 or not all(parts):
        raise Refused(f"{redact(url)} does not name an owner/repository on {host}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else "ssh"
    web = f"{scheme if scheme in ('http', 'https') else 'https'}://{host}/{parts[0]}/{parts[1]}"
    git_url = url if scheme in ("http", "https") else f"{web}.git"
    return forge, RepoId(parts[0], parts[1], git_url, web)


def _scrubbed(text: str, secrets: list[Secret]) -> str:
    for secret in secrets:
        text = secret.scrub(text)
    return redact(text)


# -- the daemon's publisher -------------------------------------------------------------


class Publisher:
    """The daemon's publishing thread and its hook on jobs being filed."""

    def __init__(
        self, config: Callable[[], Config], on_published: OnPublished | None = None,
        poll: float = POLL_SECONDS,
    ) -> None:  # fmt: skip
        self._config = config  # the running config, whatever a reload made it
        self.root = config().root
        self._on_published = on_published
        self._poll = poll
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def chained(
        self, after: Callable[[Claimed, Config], None]
    ) -> Callable[[Claimed, Config], None]:
        """JobLife's hook: this publisher's, then ``after`` (the notifications)."""

        def hook(job: Claimed, config: Config) -> None:
            self.job_finished(job, config)
            after(job, config)

        return hook

    def start(self) -> None:
        """Take requests from now on, those a crash left first."""
        if self._thread is not None:
            return
        (self.root / "publish" / "requests").mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="publish", daemon=True)
        self._thread.start()

    def close(self, grace: float) -> None:
        """Stop; a publish under way gets ``grace`` seconds (its request stays for the next
        start otherwise: publishing again is harmless)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(grace)

    def job_finished(self, job: Claimed, config: Config) -> None:
        """A job was just filed: if it (or its repository's default) asks to be published,
        a request for the publishing thread and ``publish.state: pending`` in its record.
        Never raises, never waits on the network."""
        try:
            spec = parse_job(job.data, config)
        except InvalidJob:
            return
        try:
            mode = config.publish.mode_for(spec.repo_url, spec.publish)
            if mode == "none":
                return
            with job_lock(config.root, job.job_id):
                request = drop_request(config.root, job.job_id, None, by="job")
                write_publish(Layout(config.root).out_dir(job.job_id),
                              {"state": "pending", "as": mode, "request": request.nonce,
                               "requested_at": utc_now()})  # fmt: skip
            self._wake.set()
        except Exception:  # publishing must never fail the job
            log.exception("job %s: could not ask for it to be published", job.job_id)

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for path in listed(self.root):
                    if self._stop.is_set():
                        return
                    self._take(path)
            except Exception:
                log.exception("publishing: looking for requests")
            self._wake.wait(self._poll)
            self._wake.clear()

    def _take(self, path: Path) -> None:
        """One request, if no other publisher holds it: done, then removed (unless the
        daemon stopped under it: then it is done at the next start)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return  # taken and done by another daemon meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # another daemon is at it
            try:
                if os.stat(path, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                    return
            except FileNotFoundError:
                return  # done by another daemon between our open and our lock
            request = parse_request(path)
            if request is not None:
                try:
                    self._do(request)
                except Stopped:
                    log.info("job %s: publishing left for the next start", request.job_id)
                    return
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        finally:
            os.close(fd)

    def _do(self, request: Request) -> None:
        config = self._config()
        out_dir = Layout(config.root).out_dir(request.job_id)
        began = time.monotonic()
        with job_lock(config.root, request.job_id):
            try:
                fallback = "draft" if request.by == "cli" else None  # a person asked
                outcome = publish_job(config, request.job_id, request.mode, self._stop,
                                      fallback=fallback)  # fmt: skip
            except Stopped:
                raise
            except Exception as exc:  # a bug here must not leave the job pending
                log.exception("job %s: publishing failed", request.job_id)
                outcome = {"state": "failed", "reason": f"internal error: {exc!r}"}
            outcome = {**outcome, "request": request.nonce, "by": request.by,
                       "at": utc_now()}  # fmt: skip
            written = write_publish(out_dir, outcome)
        state, reason = outcome["state"], outcome.get("reason")
        took = time.monotonic() - began
        if state in ("published", "pushed"):
            log.info("job %s: %s: %s (%.1fs)", request.job_id, state, outcome.get("url"), took)
        elif state == "skipped":
            log.info("job %s: not published: %s", request.job_id, reason)
        else:
            log.warning("job %s: publish %s: %s", request.job_id, state, reason)
        if written is not None and state != "skipped" and self._on_published is not None:
            try:
                self._on_published(config, request.job_id, self._job_data(config, request.job_id))
            except Exception:
                log.exception("job %s: could not queue its job.published notification",
                              request.job_id)  # fmt: skip

    @staticmethod
    def _job_data(config: Config, job_id: str) -> bytes | None:
        layout = Layout(config.root)
        for folder in (layout.done, layout.failed):
            data = read_regular(folder / f"{job_id}.yaml", MAX_JOB_BYTES + 1)
            if data is not None:
                return data
        return None


def request_publish(config: Config, job_id: str, mode: str | None) -> Request:
    """What ``watcherd publish`` does: a request for the daemon (which alone reads the
    credentials and pushes)."""
    return drop_request(config.root, job_id, mode, by="cli")
