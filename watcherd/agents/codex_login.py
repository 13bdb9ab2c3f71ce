"""Codex's ChatGPT login, kept by the daemon: a job gets a stand-in, the gateway the token.

The login dir's ``auth.json`` (``watcherd login``) never reaches a job. A job's Codex finds
in its home an ``auth.json`` of the same shape that holds nothing secret: its access token
is the job's gateway token, its refresh token a placeholder, its id token an unsigned copy
of the two claims Codex reads (plan and account; no e-mail), and its ``last_refresh`` is
now, so that Codex never wants to renew it (it renews after 8 days, or after a 401). The
gateway puts the login's access token in place of the job's token on every call.

The daemon renews the login itself, before a job that would outlive its access token or
when Codex would think it stale, with the single-use refresh token Codex would have used:
under a lock on the login dir, so that the token is spent once whatever else runs.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watcherd.agents.base import LoginError
from watcherd.util.fsutil import write_atomic
from watcherd.util.safeio import read_whole

log = logging.getLogger("watcherd.login")

LOGIN_FILE = "auth.json"
MAX_LOGIN_BYTES = 64 * 1024
TOKEN_URL = "https://auth.openai.com/oauth/token"
TOKEN_URL_ENV = "CODEX_REFRESH_TOKEN_URL_OVERRIDE"  # Codex's own, in agents.codex.env
CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"  # Codex's public OAuth client
CODEX_RENEWS_AFTER = 8 * 86400.0  # Codex renews a login this old (or after a 401)
RENEW_AFTER = CODEX_RENEWS_AFTER - 86400.0  # the daemon does, a day before Codex would
EXPIRY_MARGIN = 600.0  # an access token must outlive the job by this much
HELD = "held-by-watcherd"  # the stand-in's refresh token: good for nothing
_AUTH_CLAIMS = "https://api.openai.com/auth"


@dataclass(frozen=True)
class Login:
    """What the daemon reads of an ``auth.json`` (never logged: see __repr__)."""

    record: dict[str, Any]
    api_key: str | None
    access_token: str | None
    refresh_token: str | None
    id_token: str | None
    account_id: str | None
    last_refresh: float | None  # seconds since the epoch

    def __repr__(self) -> str:
        return f"Login(account_id={self.account_id!r}, chatgpt={self.access_token is not None})"

    @property
    def expires(self) -> float | None:
        """The access token's ``exp`` where it is a JWT that says."""
        value = _claims(self.access_token).get("exp")
        return float(value) if isinstance(value, int | float) else None

    def due(self, now: float, needed_for: float) -> bool:
        """Whether to renew it before a job of ``needed_for`` seconds."""
        if self.last_refresh is None or now - self.last_refresh >= RENEW_AFTER:
            return True
        expires = self.expires
        return expires is not None and expires < now + needed_for + EXPIRY_MARGIN


def read_login(data: bytes | None) -> Login | None:
    """An ``auth.json``'s login: an API key, or ChatGPT tokens; None if it has neither."""
    try:
        record = json.loads(data) if data else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    api_key = _text(record.get("OPENAI_API_KEY"))
    tokens = record.get("tokens")
    tokens = tokens if isinstance(tokens, dict) else {}
    access = _text(tokens.get("access_token"))
    if api_key is None and access is None:
        return None
    return Login(
        record=record, api_key=api_key, access_token=access,
        refresh_token=_text(tokens.get("refresh_token")),
        id_token=_text(tokens.get("id_token")), account_id=_text(tokens.get("account_id")),
        last_refresh=_seconds(record.get("last_refresh")),
    )  # fmt: skip


def stand_in(login: Login, token: str, now: float | None = None) -> bytes:
    """The job's ``auth.json`` for a ChatGPT login: the same account, no secret in it."""
    auth = _claims(login.id_token).get(_AUTH_CLAIMS)
    auth = auth if isinstance(auth, dict) else {}
    kept = {k: auth[k] for k in ("chatgpt_plan_type", "chatgpt_account_id") if k in auth}
    if login.account_id and "chatgpt_account_id" not in kept:
        kept["chatgpt_account_id"] = login.account_id
    id_token = ".".join(
        _b64(json.dumps(part, separators=(",", ":")).encode())
        for part in ({"alg": "none", "typ": "JWT"}, {_AUTH_CLAIMS: kept})
    ) + "." + _b64(b"watcherd")  # fmt: skip
    record = {
        "OPENAI_API_KEY": None,
        "tokens": {"id_token": id_token, "access_token": token, "refresh_token": HELD,
                   "account_id": login.account_id},
        "last_refresh": _timestamp(time.time() if now is None else now),
    }  # fmt: skip
    return json.dumps(record, indent=2).encode() + b"\n"


def renew(folder: Path, env: Mapping[str, str], needed_for: float) -> bool:
    """Renew the ChatGPT login in ``folder`` if a job of ``needed_for`` seconds needs it;
    True if it was renewed. An API-key login, or none, needs nothing. A renewal that fails
    while the token still serves the job is logged, not raised."""
    with _locked(folder):
        login = read_login(read_whole(folder / LOGIN_FILE, MAX_LOGIN_BYTES))
        now = time.time()
        if login is None or login.access_token is None or not login.due(now, needed_for):
            return False
        try:
            answer = _refresh(login, env.get(TOKEN_URL_ENV) or TOKEN_URL)
        except LoginError as exc:
            expires = login.expires
            still_good = (expires is None or expires > now + needed_for) and (
                login.last_refresh is not None and now - login.last_refresh < CODEX_RENEWS_AFTER
            )
            if exc.transient and still_good:
                log.warning("the login in %s was not renewed (%s); it still serves", folder, exc)
                return False
            raise
        record = dict(login.record)
        tokens = dict(record.get("tokens") or {})
        for name in ("id_token", "access_token", "refresh_token"):
            if isinstance(answer.get(name), str) and answer[name]:
                tokens[name] = answer[name]
        record["tokens"], record["last_refresh"] = tokens, _timestamp(now)
        stat = folder.stat()
        write_atomic(
            folder / LOGIN_FILE, json.dumps(record, indent=2).encode() + b"\n", mode=0o600,
            owner=(stat.st_uid, stat.st_gid),
        )  # fmt: skip
        log.info("the login in %s was renewed", folder)
        return True


def _refresh(login: Login, url: str) -> dict[str, Any]:
    """One OAuth refresh, as Codex sends it; the answer's tokens."""
    if not login.refresh_token:
        raise LoginError("the login has no refresh token: run `watcherd login` again", False)
    body = json.dumps({
        "client_id": CLIENT_ID, "grant_type": "refresh_token",
        "refresh_token": login.refresh_token, "scope": "openid profile email",
    }).encode()  # fmt: skip
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    # The operator's token endpoint, never a proxy from the environment (as the gateway).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            answer = json.loads(response.read(MAX_LOGIN_BYTES))
    except urllib.error.HTTPError as exc:
        code = _error_code(exc.read(4096))
        permanent = exc.code in (400, 401, 403)
        raise LoginError(
            f"the login's renewal was refused ({exc.code}{', ' + code if code else ''})"
            + (": run `watcherd login` again" if permanent else ""), not permanent
        ) from None  # fmt: skip
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise LoginError(f"the login could not be renewed: {exc}", True) from None
    except (ValueError, RecursionError):
        raise LoginError("the token endpoint's answer is not JSON", True) from None
    if not isinstance(answer, dict) or not _text(answer.get("access_token")):
        raise LoginError("the token endpoint's answer has no access_token", True)
    return answer


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _error_code(body: bytes) -> str:
    try:
        record = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    error = record.get("error") if isinstance(record, dict) else None
    code = error.get("code") if isinstance(error, dict) else error
    return code if isinstance(code, str) and code.isprintable() and len(code) < 80 else ""


def _claims(token: str | None) -> dict[str, Any]:
    """A JWT's claims, unverified (only the daemon's own bookkeeping reads them)."""
    if token is None or token.count(".") != 2:
        return {}
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, RecursionError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _seconds(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
