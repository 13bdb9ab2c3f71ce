"""The application: every route in one table, the middleware, and ``serve``'s lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from watcherd.client.listing import JobList
from watcherd.config import Config
from watcherd.spool.folders import MAX_JOB_BYTES, Layout
from watcherd.web import api, events, metrics, pages, triggers
from watcherd.web.auth import Handler, Sessions, make_auth_middleware
from watcherd.web.errors import problem
from watcherd.web.tokens import TokenFileError, TokenStore

log = logging.getLogger("watcherd.web")

KEEPALIVE_SECONDS = 15.0
SHUTDOWN_SECONDS = 5.0
STATIC_TYPES = {"app.js": "text/javascript", "app.css": "text/css"}
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    api: bool = True  # listed in the OpenAPI document


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_TYPES:
        return problem(404, "no such file")
    data = resources.files("watcherd.web").joinpath("static", name).read_bytes()
    return web.Response(body=data, content_type=STATIC_TYPES[name], charset="utf-8",
                        headers={"Cache-Control": "max-age=300"})  # fmt: skip


async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi_document())


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        if not route.api:
            continue
        scope = getattr(route.handler, "scope", None)
        operation: dict[str, Any] = {
            "summary": route.summary,
            "responses": {
                "200": {"description": "OK"},
                "4XX": {"description": 'refused: {"error": reason, "status": code}'},
            },
        }
        parameters = [{"name": part.strip("{}"), "in": "path", "required": True,
                       "schema": {"type": "string"}}
                      for part in route.path.split("/") if part.startswith("{")]  # fmt: skip
        if parameters:
            operation["parameters"] = parameters
        if scope is None:
            operation["security"] = []
        else:
            operation["x-watcherd-scope"] = scope
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "watcherd", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/v1/jobs", api.post_job,
          "Submit a job (YAML or JSON body; ?name=; Idempotency-Key header)"),
    Route("GET", "/api/v1/jobs", api.list_jobs,
          "List jobs newest first (state, agent, repository, name, cursor, limit)"),
    Route("GET", "/api/v1/jobs/{job}", api.get_job, "One job by name or id"),
    Route("GET", "/api/v1/jobs/{job}/summary", api.get_summary, "The job's summary.md"),
    Route("GET", "/api/v1/jobs/{job}/patch", api.get_patch, "The job's changes.patch"),
    Route("GET", "/api/v1/jobs/{job}/files/{name}", api.get_file, "One of the job's outputs"),
    Route("GET", "/api/v1/jobs/{job}/events", events.job_events,
          "The job's progress as Server-Sent Events (Last-Event-ID resumes)"),
    Route("POST", "/api/v1/jobs/{job}/cancel", api.post_cancel, "Cancel a queued or running job"),
    Route("POST", "/api/v1/jobs/{job}/retry", api.post_retry, "Put a failed job back in the inbox"),
    Route("GET", "/api/v1/schedules", triggers.list_schedules,
          "The operator's schedules: next times, last run, paused"),
    Route("POST", "/api/v1/schedules/{id}/{action}", triggers.schedule_action,
          "pause, resume or run-now one schedule"),
    Route("POST", "/api/v1/hooks/{name}", triggers.receive_hook,
          "A signed inbound delivery (X-Hub-Signature-256); no token"),
    Route("GET", "/api/v1/openapi.json", openapi, "This document"),
    Route("GET", "/healthz", api.healthz, "Whether the root's inbox is writable"),
    Route("GET", "/metrics", metrics.metrics, "Prometheus text format"),
    Route("GET", "/", pages.dashboard, "", api=False),
    Route("GET", "/ui/jobs", pages.jobs_fragment, "", api=False),
    Route("GET", "/jobs/{job}", pages.job_page, "", api=False),
    Route("POST", "/jobs/{job}/cancel", pages.cancel_from_page, "", api=False),
    Route("POST", "/jobs/{job}/retry", pages.retry_from_page, "", api=False),
    Route("POST", "/submit", pages.submit_from_page, "", api=False),
    Route("GET", "/schedules", triggers.schedules_page, "", api=False),
    Route("POST", "/schedules/{id}/{action}", triggers.schedule_action_from_page, "", api=False),
    Route("GET", "/login", pages.login_form, "", api=False),
    Route("GET", "/static/{name}", static, "", api=False),
)  # fmt: skip


def make_app(config: Config, tokens: TokenStore | None = None) -> web.Application:
    settings = config.serve
    tokens = tokens or TokenStore(tokens_path(config))
    sessions = Sessions()

    def origin(request: web.Request) -> str:
        return settings.public_url or f"{request.scheme}://{request.host}"

    app = web.Application(
        client_max_size=4 * MAX_JOB_BYTES,  # a form's encoding of the largest job
        middlewares=[_headers, _errors, make_auth_middleware(tokens, sessions, origin)],
    )
    layout = Layout(config.root)
    app[events.STOPPING] = asyncio.Event()

    async def stopping(app: web.Application) -> None:
        app[events.STOPPING].set()  # open event streams end now, not at the shutdown timeout

    app.on_shutdown.append(stopping)
    app[api.ROOT] = api.Root(config, layout, JobList(layout, config))
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    secure = bool(settings.public_url and settings.public_url.startswith("https:"))
    app.router.add_post("/login", pages.make_login(tokens, sessions, secure, origin))
    app.router.add_post("/logout", pages.make_logout(sessions))
    return app


def tokens_path(config: Config) -> Path:
    return config.serve.tokens_file or Layout(config.root).state / "tokens.yaml"


@web.middleware
async def _headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if response.content_type == "text/html":
        response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own refusals (404, 405, 413, a redirect) as the same JSON body, except the
    redirects pages use."""
    try:
        return await handler(request)
    except web.HTTPRedirection:
        raise
    except web.HTTPException as exc:
        reason = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return problem(exc.status, reason or "refused", headers=None)


# -- serve: the lifecycle -----------------------------------------------------------------


class _Refuse(asyncio.Protocol):
    """A connection over the limit: told so and closed, never queued in memory."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\n\r\n")  # fmt: skip
        transport.close()


async def run_server(config: Config, ready: Callable[[int], None] | None = None,
                     stop: asyncio.Event | None = None) -> None:  # fmt: skip
    """Serve until ``stop`` is set (or SIGTERM/SIGINT): start-up, loop, shutdown."""
    settings = config.serve
    tokens = TokenStore(tokens_path(config))
    if not tokens.tokens():
        raise TokenFileError(
            f"no API tokens in {tokens.path}: make one with `watcherd token add NAME "
            "--scope read --scope submit --scope admin` (it is shown once)"
        )
    app = make_app(config, tokens)
    runner = web.AppRunner(app, keepalive_timeout=KEEPALIVE_SECONDS, access_log=None,
                           shutdown_timeout=SHUTDOWN_SECONDS)  # fmt: skip
    await runner.setup()
    server = runner.server
    assert server is not None

    def limited() -> asyncio.BaseProtocol:
        if len(server.connections) >= settings.max_connections:
            return _Refuse()
        return server()

    loop = asyncio.get_running_loop()
    listener = await loop.create_server(limited, settings.host, settings.port, backlog=512)
    port = listener.sockets[0].getsockname()[1]
    log.info("serving %s on http://%s:%d/ (root %s)", "the API and dashboard", settings.host,
             port, config.root)  # fmt: skip
    stop = stop or asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(RuntimeError, ValueError):  # not the main thread (tests)
            loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        ready(port)
    try:
        await stop.wait()
    finally:
        listener.close()
        await listener.wait_closed()
        await runner.cleanup()
        log.info("stopped serving")
