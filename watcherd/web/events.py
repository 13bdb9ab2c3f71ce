"""``GET /api/v1/jobs/{job}/events``: a job's rendered progress as Server-Sent Events, the
same lines ``logs -f`` prints, live, until the job ends.

Each line is an event whose id is its number in the job's rendering, which is the same every
time it is rendered from the start: a client that reconnects with ``Last-Event-ID`` gets
what came after that line and nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web

from watcherd.client.follow import Follower
from watcherd.web.api import find, root_of
from watcherd.web.auth import needs, still_allowed

STOPPING = web.AppKey("stopping", asyncio.Event)
POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
RECHECK_SECONDS = 1.0  # how soon a stream ends after its token is removed


def _client_left(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@needs("read")
async def job_events(request: web.Request) -> web.StreamResponse:
    ref = find(request)
    try:
        resume_after = int(request.headers.get("Last-Event-ID", "0"))
    except ValueError:
        resume_after = 0
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",  # a reverse proxy must not hold the stream back
    })  # fmt: skip
    await response.prepare(request)
    follower = Follower(root_of(request).layout, ref)
    loop = asyncio.get_running_loop()
    number = 0
    quiet = since_check = 0.0
    while True:
        lines, ended = await loop.run_in_executor(None, follower.step)
        for line in lines:
            number += 1
            if number > resume_after:
                await response.write(f"id: {number}\nevent: line\ndata: {json.dumps(line)}\n\n"
                                     .encode())  # fmt: skip
                quiet = 0.0
        if ended is not None:
            record = getattr(ended, "record", None) or {"state": "gone"}
            payload = json.dumps({"state": record.get("state"), "reason": record.get("reason")})
            await response.write(f"event: end\ndata: {payload}\n\n".encode())
            break
        stopping = request.app[STOPPING]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), POLL_SECONDS)
        if stopping.is_set():  # the server is stopping: the client reconnects elsewhere
            break
        if _client_left(request):  # else noticed at the next write, up to 15 s from now
            return response
        quiet += POLL_SECONDS
        since_check += POLL_SECONDS
        if since_check >= RECHECK_SECONDS:  # a stream may last hours: its token may not
            since_check = 0.0
            if not still_allowed(request):
                break
        if quiet >= KEEPALIVE_SECONDS:  # a comment: keeps proxies from closing an idle stream
            await response.write(b": keep-alive\n\n")
            quiet = 0.0
    await response.write_eof()
    return response
