"""The JSON API under /api/v1/: submit, list, show, outputs, cancel, retry."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from aiohttp import web

from watcherd.client.cancel import CancelAnswer, cancel
from watcherd.client.jobview import view_job
from watcherd.client.listing import Filters, JobList
from watcherd.client.submit import BadName, InvalidJob, submit
from watcherd.config import Config
from watcherd.spool.drop import Dropped
from watcherd.spool.folders import MAX_JOB_BYTES, Layout, NotRetryable, Spool
from watcherd.spool.jobid import is_job_id
from watcherd.spool.lookup import JobRef, find_claim, resolve
from watcherd.util.safeio import read_regular
from watcherd.web.auth import caller, needs
from watcherd.web.errors import problem

IDEMPOTENCY_SECONDS = 24 * 3600  # how long an Idempotency-Key means its job
ABANDONED_SECONDS = 60.0  # an empty key record this old: its request died
BODY_SECONDS = 10.0  # a client that has not sent its whole body by then is cut off
PAGE_LIMIT_MAX = 200
# What /files/{name} serves: the job's documented outputs, nothing else under out/<id>/.
OUTPUT_FILES = {
    "summary.md": "text/markdown",
    "changes.patch": "text/x-diff",
    "run.log": "text/plain",
    "exit.json": "application/json",
    "events.jsonl": "application/x-ndjson",
    "model-calls.jsonl": "application/x-ndjson",
}
OUTPUT_LIMIT = 64 * 1024 * 1024


@dataclass
class Root:
    """What every handler works on: the config, the root's layout and its job list."""

    config: Config
    layout: Layout
    jobs: JobList

    @property
    def idempotency(self) -> Path:
        return self.layout.state / "idempotency"


ROOT = web.AppKey("root", Root)


def root_of(request: web.Request) -> Root:
    return request.app[ROOT]


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes, within BODY_SECONDS."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)

    async def whole() -> bytes:
        chunks, size = [], 0
        while size <= limit:
            chunk = await request.content.read(limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    try:
        data = await asyncio.wait_for(whole(), BODY_SECONDS)
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="the request body did not arrive in time") from None
    if len(data) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
    return data


# -- submit -------------------------------------------------------------------------------


@needs("submit")
async def post_job(request: web.Request) -> web.StreamResponse:
    root = root_of(request)
    data = await read_body(request, MAX_JOB_BYTES)
    if request.content_type == "application/json":
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as exc:
            return problem(400, f"body: not valid JSON: {exc}")
        if not isinstance(document, dict):
            return problem(400, "body: expected a JSON object of job keys (repo_url, prompt, ...)")
        data = yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode()
    name = request.query.get("name", "job")
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= 200 and key.isprintable()):
        return problem(400, "Idempotency-Key: 1-200 printable characters")
    loop = asyncio.get_running_loop()
    try:
        result = await loop.run_in_executor(
            None, _submit_once, root, caller(request).token.name, key, name, data
        )
    except (InvalidJob, BadName) as exc:
        return problem(422 if isinstance(exc, InvalidJob) else 400, f"{name}: {exc}")
    except OSError as exc:
        return problem(503, f"cannot write into the inbox: {exc.strerror or exc}")
    body = _job_json(root, result)
    status = 202 if body["state"] in ("queued", "running") else 200
    return web.json_response(body, status=status, headers={"Location": body["location"]})


def _submit_once(root: Root, token_name: str, key: str | None, name: str, data: bytes) -> JobRef:
    """Submit, or with an Idempotency-Key already used by this token, the job it made."""
    if key is None:
        dropped, _ = submit(root.config, name, data)
        return _ref_of_dropped(root, dropped)
    root.idempotency.mkdir(mode=0o700, parents=True, exist_ok=True)
    record = root.idempotency / hashlib.sha256(f"{token_name}\0{key}".encode()).hexdigest()
    fingerprint = hashlib.sha256(data).hexdigest()
    _prune_idempotency(root)
    try:
        fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if not _abandoned(record):
            return _replay(root, record, fingerprint)
        record.unlink(missing_ok=True)  # its request died before it dropped anything
        fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        dropped, _ = submit(root.config, name, data)
    except BaseException:
        os.close(fd)
        record.unlink()
        raise
    ref = None
    try:
        ref = _ref_of_dropped(root, dropped)
    finally:  # the record is never left empty: a retry would wait for it for good
        with os.fdopen(fd, "w") as handle:
            json.dump({"name": dropped.path.name, "inode": dropped.inode,
                       "job_id": ref.job_id if ref else None, "body": fingerprint},
                      handle)  # fmt: skip
    return ref


def _abandoned(record: Path) -> bool:
    """Empty, and for longer than any request takes: its server died mid-request."""
    try:
        st = record.stat()
    except FileNotFoundError:
        return False
    return st.st_size == 0 and time.time() - st.st_mtime > ABANDONED_SECONDS


def _prune_idempotency(root: Root) -> None:
    """Keys older than IDEMPOTENCY_SECONDS are forgotten, looked at once an hour at most."""
    marker = root.idempotency / ".pruned"
    try:
        if time.time() - marker.stat().st_mtime < 3600:
            return
    except FileNotFoundError:
        pass
    marker.touch()
    cutoff = time.time() - IDEMPOTENCY_SECONDS
    with os.scandir(root.idempotency) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if not entry.name.startswith(".") and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)


def _replay(root: Root, record: Path, fingerprint: str) -> JobRef:
    for _ in range(100):  # the first request may still be writing it
        data = read_regular(record, 4096)
        if data:
            saved = json.loads(data)
            if saved.get("body") != fingerprint:
                raise InvalidJob("Idempotency-Key was used before with another job body")
            job_id = saved.get("job_id")
            if isinstance(job_id, str) and is_job_id(job_id):
                claimed = resolve(root.layout, job_id)
                if claimed is None:
                    raise OSError(f"the job this Idempotency-Key made ({job_id}) is gone")
                return claimed
            return _ref_of_entry(root, saved["name"], saved.get("inode"))
        time.sleep(0.01)
    raise OSError("the first request with this Idempotency-Key did not finish")


def _ref_of_dropped(root: Root, dropped: Dropped) -> JobRef:
    """The job just dropped: by its inode, in the inbox or claimed already (a daemon with
    no settle time), never another job that had its name."""
    return _ref_of_entry(root, dropped.path.name, dropped.inode)


def _ref_of_entry(root: Root, name: str, inode: object) -> JobRef:
    """The job the inbox entry ``name`` with ``inode`` became: names are reused, so the
    newest job of that name may be another one (the claim keeps the inode)."""
    if not isinstance(inode, int):
        return _ref_of(root, name)
    ref = resolve(root.layout, name)
    if ref is not None and ref.job_id is None and ref.inode == inode:
        return ref  # still queued
    job_id = find_claim(root.layout, name, inode)
    claimed = resolve(root.layout, job_id) if job_id is not None else None
    if claimed is None:
        raise OSError(f"the job this Idempotency-Key made ({name}) is gone")
    return claimed


def _ref_of(root: Root, name: str) -> JobRef:
    ref = resolve(root.layout, name)
    if ref is None:  # claimed and gone between two looks: cannot be, but say something
        raise OSError(f"job {name} vanished")
    return ref


def job_location(handle: str) -> str:
    """The job's URL: its name may hold '%', '?' or '#', which would lead elsewhere."""
    return f"/api/v1/jobs/{quote(handle, safe='', errors='surrogatepass')}"


def _job_json(root: Root, ref: JobRef) -> dict[str, Any]:
    view = view_job(root.layout, root.config, ref)
    handle = view.job_id or view.name or ""
    record = view.record or {}
    body: dict[str, Any] = {
        "id": view.job_id,
        "name": view.name,
        "state": view.state,
        "reason": view.reason,
        "location": job_location(handle),
        "branch": view.branch,
        "results_repo": view.results_repo,
        "fetch": f"git fetch {view.results_repo} {view.branch}"
        if view.branch and view.results_repo
        else None,
        "record": view.record,
        "summary": view.summary,
        "last_activity": view.progress.last_activity if view.progress else None,
        "tokens": view.progress.tokens if view.progress else None,
        "age_seconds": None if view.age_seconds is None else round(view.age_seconds),
        "attempts": record.get("attempts"),
    }
    return body


# -- read ---------------------------------------------------------------------------------


@needs("read")
async def list_jobs(request: web.Request) -> web.StreamResponse:
    root = root_of(request)
    query = request.query
    unknown = sorted(set(query) - {"state", "agent", "repository", "name", "cursor", "limit"})
    if unknown:
        return problem(400, f"unknown parameter(s): {', '.join(unknown)}")
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        return problem(400, "limit: expected a number")
    if not 1 <= limit <= PAGE_LIMIT_MAX:
        return problem(400, f"limit: 1..{PAGE_LIMIT_MAX}")
    after = None
    if "cursor" in query:
        after = _cursor_key(query["cursor"])
        if after is None:
            return problem(400, "cursor: not one this server gave")
    filters = Filters(query.get("state"), query.get("agent"), query.get("repository"),
                      query.get("name"))  # fmt: skip
    loop = asyncio.get_running_loop()
    lines = await loop.run_in_executor(None, root.jobs.page, filters, after, limit + 1)
    more = len(lines) > limit
    lines = lines[:limit]
    body: dict[str, Any] = {"jobs": [line.to_json() for line in lines], "next_cursor": None}
    if more:
        body["next_cursor"] = base64.urlsafe_b64encode(lines[-1].key.encode()).decode()
    return web.json_response(body)


def _cursor_key(cursor: str) -> str | None:
    try:
        key = base64.urlsafe_b64decode(cursor.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError):
        return None
    if base64.urlsafe_b64encode(key.encode()).decode() != cursor:
        return None  # only what this server encoded
    return key if is_job_id(key) or key.startswith("~") else None


def find(request: web.Request) -> JobRef:
    query = request.match_info["job"]
    if "/" in query or "\0" in query or query.startswith("."):
        raise web.HTTPBadRequest(text="a job is named by its name or id, never a path")
    ref = resolve(root_of(request).layout, query)
    if ref is None:
        raise web.HTTPNotFound(text=f"no job {query!r}")
    return ref


@needs("read")
async def get_job(request: web.Request) -> web.StreamResponse:
    ref = find(request)
    loop = asyncio.get_running_loop()
    body = await loop.run_in_executor(None, _job_json, root_of(request), ref)
    return web.json_response(body)


@needs("read")
async def get_summary(request: web.Request) -> web.StreamResponse:
    return await _output(request, "summary.md")


@needs("read")
async def get_patch(request: web.Request) -> web.StreamResponse:
    return await _output(request, "changes.patch")


@needs("read")
async def get_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in OUTPUT_FILES:
        return problem(404, f"{name!r} is not one of a job's outputs "
                       f"({', '.join(sorted(OUTPUT_FILES))})")  # fmt: skip
    return await _output(request, name)


async def _output(request: web.Request, name: str) -> web.StreamResponse:
    ref = find(request)
    if ref.job_id is None:
        return problem(404, f"job {ref.name!r} is queued: it has no outputs yet")
    path = root_of(request).layout.out_dir(ref.job_id) / name
    loop = asyncio.get_running_loop()
    data = await loop.run_in_executor(None, read_regular, path, OUTPUT_LIMIT)
    if data is None:
        return problem(404, f"job {ref.job_id} has no {name} (yet)")
    # Served as text to download or show, never as a page: nothing an agent wrote runs.
    return web.Response(body=data, headers={
        "Content-Type": f"{OUTPUT_FILES[name]}; charset=utf-8",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    })  # fmt: skip


# -- steer --------------------------------------------------------------------------------


@needs("admin")
async def post_cancel(request: web.Request) -> web.StreamResponse:
    query = request.match_info["job"]
    find(request)  # the same 400/404 as everywhere
    loop = asyncio.get_running_loop()
    try:
        result = await loop.run_in_executor(
            None, cancel, root_of(request).layout, query, caller(request).who
        )
    except OSError as exc:
        return problem(503, f"cannot write the cancel request: {exc.strerror or exc}")
    if result.answer is CancelAnswer.UNKNOWN:
        return problem(404, f"no job {query!r}")
    if result.answer is CancelAnswer.ENDED and result.state != "cancelled":
        return problem(409, result.message)
    assert result.ref is not None
    body = {"answer": result.answer.value, "message": result.message,
            "id": result.ref.job_id, "name": result.ref.name}  # fmt: skip
    return web.json_response(body, status=202 if result.answer is CancelAnswer.REQUESTED else 200)


@needs("admin")
async def post_retry(request: web.Request) -> web.StreamResponse:
    ref = find(request)
    if ref.job_id is None or not is_job_id(ref.job_id):
        return problem(409, "only a failed job can be retried; this one is queued")
    root = root_of(request)
    loop = asyncio.get_running_loop()
    try:
        target = await loop.run_in_executor(None, Spool(root.layout).requeue, ref.job_id)
    except NotRetryable as exc:
        return problem(409, str(exc))
    except OSError as exc:
        return problem(503, f"cannot retry: cannot move the job into the inbox: "
                       f"{exc.strerror or exc}")  # fmt: skip
    return web.json_response(
        {"name": target.name, "location": job_location(target.name)}, status=202,
        headers={"Location": job_location(target.name)},
    )  # fmt: skip


async def healthz(request: web.Request) -> web.StreamResponse:
    root = root_of(request)
    ok = root.layout.inbox.is_dir() and os.access(root.layout.inbox, os.W_OK)
    return web.json_response({"ok": ok}, status=200 if ok else 503)
