"""Signed inbound hooks: one delivery (an HTTP POST's headers and raw body) in, at most one
job file out. Framework-free: the HTTP server hands ``receive`` what it read and answers
with the status and reason it returns.

In this order, each step refusing before the next one runs:

1. the body is within the hook's ``max_body``;
2. the signature: ``X-Hub-Signature-256: sha256=<hex>``, HMAC-SHA256 of the raw body with
   the hook's secret, compared in constant time, before a byte of the body is parsed (an
   unknown hook name is answered as a hook whose secret nobody has: the answers do not
   tell which names exist);
3. a delivery id (``X-GitHub-Delivery``, or ``X-Watcherd-Delivery``);
4. the body is a JSON object; for GitHub, an event and action the hook acts on, the
   trigger phrase, said by someone of an allowed ``author_association``;
5. the delivery was never seen: its record, named by the digest of the signed body (the
   delivery id header is not signed), is made by an exclusive rename, so of two copies
   racing exactly one goes on (a replay, under any id, is answered 200, no job);
6. the job: the hook's template, the payload's named fields quoted (as JSON strings) into
   its prompt and nowhere else, checked by ``parse_job``, dropped into the inbox with its
   origin (hook, delivery) on record.

A payload never becomes job keys: the job file is the template, serialised by a YAML
emitter after the prompt is filled in, so no value can add a key or change another.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from watcherd.config import Config
from watcherd.config.hooks import DEFAULT_MAX_BODY, PLACEHOLDER, Hook
from watcherd.job.spec import InvalidJob, parse_job
from watcherd.spool.folders import Layout
from watcherd.spool.lookup import resolve
from watcherd.triggers.dropper import drop_exact
from watcherd.triggers.state import RecordFolder, iso, stamp

log = logging.getLogger("watcherd.hooks")

SIGNATURE_HEADER = "x-hub-signature-256"
DELIVERY_HEADERS = ("x-github-delivery", "x-watcherd-delivery")
EVENT_HEADER = "x-github-event"
SECRET_LIMIT = 4096
FIELD_LIMIT = 16 * 1024  # characters of one payload field in the prompt
_DELIVERY = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_NOBODYS_SECRET = secrets.token_bytes(32)  # an unknown hook's: nothing matches it


@dataclass(frozen=True)
class HookOutcome:
    """What to answer: the HTTP status, a reason for the sender and the log, the job."""

    status: int
    reason: str
    job_name: str | None = None
    job_path: Path | None = None
    delivery: str | None = None

    @property
    def dropped(self) -> bool:
        return self.job_path is not None


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``, as GitHub computes it."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def receive(
    config: Config,
    layout: Layout,
    hook_name: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
) -> HookOutcome:
    """One delivery to the hook ``hook_name``; never raises for what a sender can send."""
    label = hook_name if hook_name in config.hooks else repr(hook_name[:64])  # a sender's
    try:
        outcome = _receive(config, layout, hook_name, headers, body, now)
    except OSError as exc:  # the disk: a redelivery finds the record and finishes the drop
        log.error("hook %s: %s", label, exc)
        outcome = HookOutcome(503, "the job could not be dropped now; redeliver later")
    level = logging.INFO if outcome.status < 400 else logging.WARNING
    log.log(level, "hook %s: %d %s", label, outcome.status, outcome.reason)
    return outcome


def body_limit(config: Config, hook_name: str) -> int:
    """The most bytes a delivery to ``hook_name`` may have; an unknown name gets a known
    hook's default, so the limit does not tell which names exist."""
    hook = config.hooks.get(hook_name)
    return hook.max_body if hook is not None else DEFAULT_MAX_BODY


def _receive(
    config: Config,
    layout: Layout,
    hook_name: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
) -> HookOutcome:
    hook = config.hooks.get(hook_name)
    max_body = body_limit(config, hook_name)
    if len(body) > max_body:
        return HookOutcome(413, f"body of {len(body)} bytes; this hook takes at most {max_body}")
    lower = {key.lower(): value for key, value in headers.items()}
    if hook is None:
        # Answered as a hook whose secret nobody has: the answers do not tell which names
        # exist. The log says what it was.
        log.warning("hook %r: no hook of that name", hook_name[:64])
        secret = _NOBODYS_SECRET
    else:
        try:
            secret = read_secret(hook.secret_file)
        except ValueError as exc:
            log.error("hook %s: %s", hook.name, exc)
            return HookOutcome(503, "the hook's secret cannot be read (see the daemon's log)")
    given = lower.get(SIGNATURE_HEADER)
    if not given:
        return HookOutcome(401, "no X-Hub-Signature-256 header: deliveries must be signed")
    matches = hmac.compare_digest(
        sign(secret, body).encode(), given.strip().encode("utf-8", "replace")
    )
    if hook is None or not matches:  # an unknown hook's secret is nobody's: never matches
        return HookOutcome(401, "X-Hub-Signature-256 does not match the body and the hook's secret")
    # -- signed by the holder of the secret from here on ------------------------------
    delivery = next((lower[h].strip() for h in DELIVERY_HEADERS if lower.get(h)), None)
    if delivery is None or not _DELIVERY.fullmatch(delivery):
        return HookOutcome(400, "no usable delivery id (X-GitHub-Delivery or X-Watcherd-Delivery)")
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return HookOutcome(400, "the body is not JSON", delivery=delivery)
    if not isinstance(payload, dict):
        return HookOutcome(400, "the body is not a JSON object", delivery=delivery)
    if hook.format == "github":
        event = lower.get(EVENT_HEADER, "")
        if event == "ping":
            return HookOutcome(200, "pong", delivery=delivery)
        ignored = github_ignores(hook, event, payload)
        if ignored:
            return HookOutcome(200, f"ignored: {ignored}", delivery=delivery)
    return _once(config, layout, hook, delivery, body, payload, now)


def github_ignores(hook: Hook, event: str, payload: dict[str, Any]) -> str | None:
    """Why a GitHub event does not start a job, or None when it does."""
    if event not in hook.events:
        return f"event {event[:40]!r} is not one this hook acts on ({', '.join(hook.events)})"
    action = payload.get("action")
    if event == "issue_comment":
        # The event header is not signed: another event's signed body (a review comment's,
        # a commit comment's) must not pass for an issue comment.
        if not isinstance(payload.get("issue"), dict) or not isinstance(
            payload.get("comment"), dict
        ):
            return "the payload is not an issue comment's (no issue and comment in it)"
        if action != "created":
            return f"comment action {str(action)[:20]!r}; only new comments are acted on"
        item = payload.get("comment")
        text = _get(payload, "comment.body")
    else:
        if action not in hook.actions:
            return f"issue action {str(action)[:20]!r} is not one of {', '.join(hook.actions)}"
        item = payload.get("issue")
        text = f"{_get(payload, 'issue.title')}\n{_get(payload, 'issue.body')}"
    if hook.trigger is not None and hook.trigger not in text:
        return f"no trigger phrase {hook.trigger!r}"
    association = item.get("author_association") if isinstance(item, dict) else None
    if association not in hook.associations:
        return (
            f"author_association {str(association)[:30]!r} may not trigger this hook "
            f"(allowed: {', '.join(hook.associations)})"
        )
    return None


def _once(
    config: Config,
    layout: Layout,
    hook: Hook,
    delivery: str,
    body: bytes,
    payload: dict[str, Any],
    now: datetime,
) -> HookOutcome:
    """The job of a delivery never seen before; a delivery seen before gets its answer.
    A delivery is known by its signed body: the delivery id header is not signed, so a
    captured delivery sent again under a new id is the same delivery."""
    records = RecordFolder(layout.state / "hooks" / hook.name / "deliveries")
    key = hashlib.sha256(body).hexdigest()[:40]
    try:
        data = render_job(hook, payload)
        parse_job(data, config)
    except InvalidJob as exc:
        return HookOutcome(422, f"the job from this delivery is refused: {exc}", delivery=delivery)
    name = f"hook-{hook.name}-{stamp(now)}-{secrets.token_hex(3)}.yaml"
    record = {"hook": hook.name, "delivery": delivery, "received_at": iso(now),
              "job_name": name, "job": data.decode()}  # fmt: skip
    claim = records.claim(key, json.dumps(record).encode())
    if claim is None:
        return _seen_before(layout, records, key, hook, delivery)
    try:
        path = drop_exact(layout, name, data, _origin(hook, delivery))
        claim.dropped()
    except OSError as exc:  # a full disk, say: the sender's redelivery drops it then
        log.error("hook %s: delivery %s: cannot drop its job: %s", hook.name, delivery, exc)
        return HookOutcome(503, "the job could not be dropped now; redeliver later",
                           delivery=delivery)  # fmt: skip
    finally:
        claim.release()
    return HookOutcome(202, f"queued as {name}", job_name=name, job_path=path, delivery=delivery)


def _seen_before(
    layout: Layout, records: RecordFolder, key: str, hook: Hook, delivery: str
) -> HookOutcome:
    """A replay: answered 200 with the job it made. A record whose maker died before the
    drop (its lock free, no ``.dropped``) gets its job now, once."""
    claim = records.take_over(key)
    record = records.read(key) or {}
    name = record.get("job_name") if isinstance(record.get("job_name"), str) else None
    if claim is not None:
        try:
            job = record.get("job")
            if name and isinstance(job, str) and resolve(layout, name) is None:
                path = drop_exact(layout, name, job.encode(), _origin(hook, delivery))
                claim.dropped()
                return HookOutcome(202, f"queued as {name} (the first try was cut short)",
                                   job_name=name, job_path=path, delivery=delivery)  # fmt: skip
            claim.dropped()
        finally:
            claim.release()
    first = record.get("delivery")
    seen = (f"delivery {delivery} was received before" if first in (None, delivery)
            else f"this body was received before as delivery {first}")  # fmt: skip
    return HookOutcome(
        200, f"{seen} (job {name}); not run again", job_name=name, delivery=delivery,
    )  # fmt: skip


def render_job(hook: Hook, payload: Mapping[str, Any]) -> bytes:
    """The hook's job file: its template, with each {field} in the prompt replaced by the
    payload's value as a JSON string (quoted data, newlines and quotes escaped)."""
    values = {path: _get(payload, path)[:FIELD_LIMIT] for path in hook.fields}

    def quoted(match: re.Match[str]) -> str:
        return json.dumps(values.get(match.group(1), ""), ensure_ascii=False)

    job: dict[str, Any] = dict(hook.job)
    job["prompt"] = PLACEHOLDER.sub(quoted, str(hook.job["prompt"]))
    text: str = yaml.safe_dump(job, sort_keys=False, allow_unicode=True, width=100)
    return text.encode()


def _get(payload: Mapping[str, Any], path: str) -> str:
    """A scalar at a dotted path, as text; "" for what is missing or not a scalar."""
    value: Any = payload
    for part in path.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return ""


def _origin(hook: Hook, delivery: str) -> dict[str, str]:
    return {"hook": hook.name, "delivery": delivery, "trigger": "hook"}


def read_secret(path: Path) -> bytes:
    """The hook's secret: a private regular file's bytes, whitespace around them stripped."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"secret_file {path} is not a regular file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ValueError(f"secret_file {path} is readable by others; chmod 600 it")
        with path.open("rb") as handle:
            secret = handle.read(SECRET_LIMIT + 1).strip()
    except OSError as exc:
        raise ValueError(f"secret_file {path}: {exc.strerror}") from None
    if not secret or len(secret) > SECRET_LIMIT:
        raise ValueError(f"secret_file {path} is empty or too long")
    return secret


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
