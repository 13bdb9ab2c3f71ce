"""Jobs that start themselves, over HTTP: signed inbound hooks, and the operator's schedules
(list, pause, resume, run now) for the API and the dashboard. The work is watcherd.triggers';
this only reads requests and writes answers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

from aiohttp import web

from watcherd.job.spec import InvalidJob
from watcherd.triggers import hooks, schedules
from watcherd.web.api import read_body, root_of
from watcherd.web.auth import caller, needs
from watcherd.web.errors import problem
from watcherd.web.pages import csrf_field, page, when

ACTIONS = ("pause", "resume", "run-now")


async def receive_hook(request: web.Request) -> web.StreamResponse:
    """Public: a delivery proves itself by its signature (checked before anything is read
    from it), not by a token."""
    root = root_of(request)
    name = request.match_info["name"]
    limit = hooks.body_limit(root.config, name)
    try:
        body = await read_body(request, limit)
    except web.HTTPRequestEntityTooLarge:
        return problem(413, f"the body is over this hook's limit of {limit} bytes")
    headers = dict(request.headers)
    loop = asyncio.get_running_loop()
    outcome = await loop.run_in_executor(
        None, hooks.receive, root.config, root.layout, name, headers, body, datetime.now(UTC)
    )
    answer = {"status": outcome.status, "reason": outcome.reason, "job": outcome.job_name,
              "delivery": outcome.delivery}  # fmt: skip
    if outcome.status >= 400:
        answer["error"] = outcome.reason
    return web.json_response(answer, status=outcome.status)


def _views(request: web.Request) -> list[schedules.ScheduleView]:
    root = root_of(request)
    return schedules.describe(root.config, root.layout, datetime.now(UTC))


@needs("read")
async def list_schedules(request: web.Request) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    views = await loop.run_in_executor(None, _views, request)
    return web.json_response({"schedules": [schedules.view_json(v) for v in views]})


def _act(request: web.Request, schedule_id: str, action: str) -> dict[str, object]:
    root = root_of(request)
    if schedule_id not in root.config.schedules:
        raise web.HTTPNotFound(text=f"no schedule {schedule_id!r} in the config")
    now = datetime.now(UTC)
    who = caller(request).who
    if action == "run-now":
        try:
            decision = schedules.run_now(root.config, root.layout, schedule_id, now)
        except InvalidJob as exc:
            raise web.HTTPUnprocessableEntity(text=f"schedule {schedule_id}: {exc}") from exc
        job = decision.path.name if decision.path else None
        return {"schedule": schedule_id, "action": action, "outcome": decision.outcome,
                "job": job, "reason": decision.reason}  # fmt: skip
    changed = schedules.set_paused(root.config, root.layout, schedule_id, action == "pause",
                                   now, by=who)  # fmt: skip
    return {"schedule": schedule_id, "action": action, "changed": changed}


@needs("admin")
async def schedule_action(request: web.Request) -> web.StreamResponse:
    action = request.match_info["action"]
    if action not in ACTIONS:
        return problem(404, f"no action {action!r}: {', '.join(ACTIONS)}")
    loop = asyncio.get_running_loop()
    body = await loop.run_in_executor(None, _act, request, request.match_info["id"], action)
    return web.json_response(body, status=202 if action == "run-now" else 200)


# -- the dashboard's page -----------------------------------------------------------------


@needs("read")
async def schedules_page(request: web.Request) -> web.StreamResponse:
    who = caller(request)
    loop = asyncio.get_running_loop()
    views = await loop.run_in_executor(None, _views, request)
    rows = []
    for view in views:
        data = schedules.view_json(view)
        sid = str(data["id"])
        state = "paused" if data["paused"] else ("on" if data["enabled"] else "disabled")
        upcoming = "<br>".join(when(str(n["utc"])) for n in data["next"])
        last = data["last_run"] or {}
        last_text = ""
        if last:
            job = str(last.get("job") or "")
            last_text = (f'<a href="/jobs/{quote(job, safe="")}">{escape(job)}</a> '
                         f"{escape(str(last.get('state') or ''))}")  # fmt: skip
        buttons = ""
        if who.token.allows("admin"):
            for action in ("resume" if data["paused"] else "pause", "run-now"):
                buttons += (f'<form method="post" class="inline" action="/schedules/'
                            f'{quote(sid, safe="")}/{action}">{csrf_field(who)}'
                            f"<button>{action}</button></form> ")  # fmt: skip
        rows.append(
            f"<tr><td>{escape(sid)}</td><td><code>{escape(str(data['cron']))}</code> "
            f"{escape(str(data['timezone']))}</td><td>{escape(state)}</td>"
            f"<td>{upcoming}</td><td>{last_text}</td><td>{buttons}</td></tr>"
        )
    table = ("<table class=\"jobs\"><thead><tr><th>schedule</th><th>when</th><th>state</th>"
             "<th>next</th><th>last run</th><th></th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>") if rows else (
             '<p class="empty">No schedules in the config.</p>')  # fmt: skip
    return page("Schedules", f"<h1>Schedules</h1>{table}", who)


@needs("admin")
async def schedule_action_from_page(request: web.Request) -> web.StreamResponse:
    action = request.match_info["action"]
    if action not in ACTIONS:
        return problem(404, f"no action {action!r}")
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _act, request, request.match_info["id"], action)
    raise web.HTTPSeeOther("/schedules")
