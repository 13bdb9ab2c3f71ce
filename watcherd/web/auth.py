"""Who is asking, and may they: bearer tokens for programs, a session cookie for the page.

- A program sends ``Authorization: Bearer <token>``; never a token in a URL (refused, so it
  does not end up in a proxy's log by habit).
- The page exchanges a token once (``POST /login``) for an HttpOnly, SameSite=Strict session
  cookie. A state-changing request on a session must carry the session's CSRF token (header
  ``X-CSRF-Token`` or form field ``csrf``) and come from the server's own origin.
- A failed attempt is logged (never the token) and answered slowly.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.typedefs import Middleware

from watcherd.web.errors import problem
from watcherd.web.tokens import Token, TokenFileError, TokenStore

log = logging.getLogger("watcherd.web")

SESSION_COOKIE = "watcherd_session"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000  # then the oldest ends: memory stays bounded
FAILURE_DELAY_SECONDS = 0.5
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
QUERY_TOKEN_NAMES = frozenset({"token", "access_token", "api_key", "apikey", "bearer"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Session:
    token_name: str
    token_digest: bytes  # the very token: a new one under the same name opens no old session
    csrf: str
    expires: float


@dataclass
class Sessions:
    """Page sessions, in memory: a restart of ``serve`` logs the page out."""

    by_id: dict[str, Session] = field(default_factory=dict)

    def open(self, token: Token) -> tuple[str, Session]:
        self._expire()
        while len(self.by_id) >= MAX_SESSIONS:  # a token holder logging in in a loop
            del self.by_id[min(self.by_id, key=lambda k: self.by_id[k].expires)]
        session_id = secrets.token_urlsafe(32)
        session = Session(token.name, token.digest, secrets.token_urlsafe(24),
                          time.time() + SESSION_SECONDS)  # fmt: skip
        self.by_id[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self.by_id.get(session_id)
        if session is None or session.expires < time.time():
            self.by_id.pop(session_id, None)
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self.by_id.pop(session_id, None)

    def _expire(self) -> None:
        now = time.time()
        for session_id in [k for k, s in self.by_id.items() if s.expires < now]:
            del self.by_id[session_id]


@dataclass(frozen=True)
class Caller:
    token: Token
    session: Session | None  # None: a bearer token

    @property
    def who(self) -> str:
        return f"token {self.token.name} ({'page' if self.session else 'api'})"


# Which scope a route needs: set on the route's handler by @needs; none means public.
def needs(scope: str) -> Callable[[Handler], Handler]:
    def mark(handler: Handler) -> Handler:
        handler.scope = scope  # type: ignore[attr-defined]
        return handler

    return mark


CALLER = web.RequestKey("caller", Caller)


@dataclass(frozen=True)
class Grant:
    """What let a request in, to ask again while it lasts (an event stream)."""

    tokens: TokenStore
    sessions: Sessions
    scope: str


GRANT = web.RequestKey("grant", Grant)


def caller(request: web.Request) -> Caller:
    return request[CALLER]


def still_allowed(request: web.Request) -> bool:
    """Whether the token (or session) this request came in with still lets it in: a long
    answer ends when its token is removed or its session closed."""
    grant = request[GRANT]
    try:
        who = _identify(request, grant.tokens, grant.sessions)
    except TokenFileError:
        return False
    return who is not None and who.token.allows(grant.scope)


def make_auth_middleware(
    tokens: TokenStore, sessions: Sessions, origin: Callable[[web.Request], str]
) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if QUERY_TOKEN_NAMES & {key.lower() for key in request.query}:
            return problem(400, "a token never goes in a URL: send it in the Authorization "
                           "header (Authorization: Bearer <token>)")  # fmt: skip
        scope = getattr(handler, "scope", None)
        if scope is None:
            return await handler(request)
        try:
            who = _identify(request, tokens, sessions)
        except TokenFileError as exc:
            log.error("tokens file: %s", exc)
            return problem(503, "the server's tokens file is unusable; see its log")
        if who is None:
            log.warning("refused %s %s from %s: no valid token", request.method,
                        request.rel_url.path, request.remote)  # fmt: skip
            await asyncio.sleep(FAILURE_DELAY_SECONDS)
            if _wants_html(request):
                raise web.HTTPSeeOther(f"/login?{urlencode({'next': request.rel_url.raw_path})}")
            return problem(401, "a valid token is needed: Authorization: Bearer <token>",
                           headers={"WWW-Authenticate": 'Bearer realm="watcherd"'})  # fmt: skip
        if who.session is not None and request.method not in SAFE_METHODS:
            refusal = await _csrf_refusal(request, who.session, origin(request))
            if refusal:
                log.warning("refused %s %s from %s: %s", request.method, request.rel_url.path,
                            request.remote, refusal)  # fmt: skip
                return problem(403, refusal)
        if not who.token.allows(scope):
            log.warning("refused %s %s for %s: needs scope %s", request.method,
                        request.rel_url.path, who.who, scope)  # fmt: skip
            return problem(403, f"token {who.token.name!r} lacks the {scope!r} scope")
        request[CALLER] = who
        request[GRANT] = Grant(tokens, sessions, scope)
        return await handler(request)

    return authenticate


def _identify(request: web.Request, tokens: TokenStore, sessions: Sessions) -> Caller | None:
    header = request.headers.get("Authorization", "")
    if header:
        kind, _, presented = header.partition(" ")
        if kind.lower() != "bearer" or not presented.strip():
            return None
        token = tokens.find(presented.strip())
        return None if token is None else Caller(token, None)
    session = sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    token = tokens.named(session.token_name)
    if token is None or not hmac.compare_digest(token.digest, session.token_digest):
        # removed from the file (perhaps replaced under its name): its sessions end with it
        sessions.close(request.cookies.get(SESSION_COOKIE))
        return None
    return Caller(token, session)


async def _csrf_refusal(request: web.Request, session: Session, origin: str) -> str | None:
    sent_origin = request.headers.get("Origin")
    if sent_origin is None:
        referer = request.headers.get("Referer", "")
        sent_origin = "/".join(referer.split("/")[:3]) if referer else None
    if sent_origin != origin:
        return f"cross-origin request refused (Origin {sent_origin!r}, expected {origin!r})"
    presented = request.headers.get("X-CSRF-Token")
    if presented is None and request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        value = form.get("csrf")
        presented = value if isinstance(value, str) else None
    if not presented or not hmac.compare_digest(presented, session.csrf):
        return "missing or wrong CSRF token (X-CSRF-Token header or csrf form field)"
    return None


def _wants_html(request: web.Request) -> bool:
    return not request.rel_url.path.startswith("/api/") and "text/html" in request.headers.get(
        "Accept", ""
    )
