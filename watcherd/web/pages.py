"""The dashboard: server-rendered pages, readable without JavaScript; app.js only makes the
list and a job's progress live. Everything a job or an agent wrote is escaped here and set
as text by the script: never HTML, never script (and the CSP allows no inline script)."""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Callable
from urllib.parse import parse_qs, quote, urlencode

from aiohttp import web

from watcherd.client.cancel import cancel
from watcherd.client.jobview import JobView, age_text, view_job
from watcherd.client.listing import Filters, JobLine
from watcherd.client.submit import BadName, InvalidJob, submit
from watcherd.spool.folders import MAX_JOB_BYTES, NotRetryable, Spool
from watcherd.util.safeio import read_regular
from watcherd.web.api import BODY_SECONDS, find, read_body, root_of
from watcherd.web.auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    Caller,
    Handler,
    Sessions,
    caller,
    needs,
)
from watcherd.web.errors import problem
from watcherd.web.metrics import STATES
from watcherd.web.tokens import TokenStore

PATCH_LIMIT = 1024 * 1024  # of changes.patch shown on a page (the file has it all)
LIST_LIMIT = 200


def escape(text: str) -> str:
    """HTML-escaped. A name that is not UTF-8 on disk (os.listdir's surrogate escapes) is
    shown with U+FFFD: the page cannot be encoded with it, and one such name in the inbox
    would fail the dashboard for everyone."""
    return html.escape(text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))


def path_part(text: str) -> str:
    """One percent-encoded path segment, whatever the name's bytes."""
    return quote(text, safe="", errors="surrogatepass")


def page(title: str, body: str, who: Caller | None = None) -> web.Response:
    csrf = f' data-csrf="{escape(who.session.csrf)}"' if who and who.session else ""
    nav = ""
    if who is not None:
        logout = ""
        if who.session is not None:
            logout = (f'<form method="post" action="/logout" class="inline">'
                      f'<input type="hidden" name="csrf" value="{escape(who.session.csrf)}">'
                      '<button class="link">log out</button></form>')  # fmt: skip
        nav = (f'<nav><a href="/" class="brand">watcherd</a><a href="/">jobs</a>'
               f'<a href="/schedules">schedules</a><span class="who">'
               f"{escape(who.token.name)} · {escape(', '.join(sorted(who.token.scopes)))}"
               f"</span>{logout}</nav>")  # fmt: skip
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · watcherd</title>
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head><body{csrf}>{nav}<main>{body}</main></body></html>"""
    return web.Response(text=html, content_type="text/html", charset="utf-8")


def when(text: object) -> str:
    """A UTC time the script shows in the viewer's zone (and as UTC without the script)."""
    if not isinstance(text, str) or not text:
        return "-"
    return f'<time datetime="{escape(text)}">{escape(text)}</time>'


def _state(state: str) -> str:
    return f'<span class="state state-{escape(state)}">{escape(state)}</span>'


def _job_link(line: JobLine) -> str:
    handle = line.job_id or line.name or ""
    return f'<a href="/jobs/{path_part(handle)}">{escape(line.name or handle)}</a>'


# -- the list -----------------------------------------------------------------------------


def jobs_table(lines: list[JobLine], now: float) -> str:
    if not lines:
        return '<p class="empty">No jobs here yet.</p>'
    rows = []
    for line in lines:
        tokens = (line.input_tokens or 0) + (line.output_tokens or 0)
        at = when(line.finished_at or line.started_at) if line.job_id else (
            f"queued {age_text(now - (line.queued_at or now))} ago")  # fmt: skip
        rows.append(
            f'<tr><td>{_job_link(line)}<div class="id">{escape(line.job_id or "")}</div></td>'
            f"<td>{_state(line.state)}{' (prepared)' if line.prepared else ''}</td>"
            f"<td>{escape(line.agent or '')}</td>"
            f'<td class="repo">{escape(line.repo_url or "")}</td><td>{at}</td>'
            f"<td>{tokens or ''}</td>"
            f'<td class="reason">{escape((line.reason or "")[:200])}</td></tr>'
        )
    return ("<table class=\"jobs\"><thead><tr><th>job</th><th>state</th><th>agent</th>"
            "<th>repository</th><th>time</th><th>tokens</th><th>reason</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")  # fmt: skip


def _counts(counts: dict[str, int], current: str | None) -> str:
    links = [f'<a href="/" class="{"on" if current is None else ""}">all '
             f"<b>{sum(counts.values())}</b></a>"]  # fmt: skip
    for state in STATES:
        on = "on" if state == current else ""
        links.append(f'<a href="/?{urlencode({"state": state})}" class="{on} state-{state}">'
                     f"{state} <b>{counts.get(state, 0)}</b></a>")  # fmt: skip
    return f'<div class="counts">{"".join(links)}</div>'


def _list_parts(request: web.Request) -> tuple[str, str]:
    root = root_of(request)
    state = request.query.get("state") or None
    if state is not None and state not in STATES:
        raise web.HTTPBadRequest(text=f"state: one of {', '.join(STATES)}")
    lines = root.jobs.all()
    counts: dict[str, int] = {}
    for line in lines:
        counts[line.state] = counts.get(line.state, 0) + 1
    shown = [line for line in lines if Filters(state=state).keep(line)][:LIST_LIMIT]
    return _counts(counts, state), jobs_table(shown, time.time())


@needs("read")
async def dashboard(request: web.Request) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    counts, table = await loop.run_in_executor(None, _list_parts, request)
    who = caller(request)
    state = request.query.get("state", "")
    submit_form = ""
    if who.token.allows("submit"):
        submit_form = f"""<details class="submit"><summary>Submit a job</summary>
<form method="post" action="/submit">{csrf_field(who)}
<label>name <input name="name" value="job" required></label>
<label>job (YAML: repo_url, prompt, ...)<textarea name="job" rows="6" required
placeholder="repo_url: https://github.com/acme/widgets&#10;prompt: Fix the failing test"></textarea></label>
<button>Submit</button></form></details>"""  # noqa: E501
    body = (f"<h1>Jobs</h1>{submit_form}"
            f'<div id="live-list" data-src="/ui/jobs?{urlencode({"state": state})}">'
            f"{counts}{table}</div>")  # fmt: skip
    return page("Jobs", body, who)


@needs("read")
async def jobs_fragment(request: web.Request) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    counts, table = await loop.run_in_executor(None, _list_parts, request)
    return web.Response(text=counts + table, content_type="text/html", charset="utf-8")


# -- one job ------------------------------------------------------------------------------


def _diff(patch: str) -> str:
    out = []
    for line in patch.splitlines():
        kind = ""
        if line.startswith(("+++", "---", "diff ", "index ")):
            kind = "meta"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        elif line.startswith("@@"):
            kind = "hunk"
        out.append(f'<span class="{kind}">{escape(line)}</span>')
    return "\n".join(out)


def _job_body(request: web.Request, who: Caller) -> tuple[str, str]:
    root = root_of(request)
    ref = find(request)
    view: JobView = view_job(root.layout, root.config, ref)
    record = view.record or {}
    handle = view.job_id or view.name or ""
    facts = [("state", _state(view.state)), ("reason", escape(view.reason or "-"))]
    if view.job_id:
        facts.append(("id", escape(view.job_id)))
    facts += [
        ("attempts", escape(str(record.get("attempts", "-")))),
        ("started", when(record.get("started_at"))),
        ("finished", when(record.get("finished_at"))),
    ]
    if record.get("cancelled_by"):
        facts.append(("cancelled by", escape(str(record["cancelled_by"]))))
    if view.age_seconds is not None:
        facts.append(("running for", escape(age_text(view.age_seconds))))
    usage = record.get("usage")
    if isinstance(usage, dict):
        tokens = f"{usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out"
        facts.append(("tokens", escape(tokens)))
    elif view.progress is not None and view.progress.tokens is not None:
        facts.append(("tokens", escape(f"{view.progress.tokens} so far")))
    if view.branch and view.results_repo:
        fetch = f"git fetch {view.results_repo} {view.branch}"
        facts.append(("branch", f"<code>{escape(view.branch)}</code>"))
        facts.append(("fetch", f"<code>{escape(fetch)}</code>"))
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    buttons = ""
    ended = view.state not in ("queued", "running")
    if who.token.allows("admin"):
        if not ended:
            buttons += (f'<form method="post" action="/jobs/{path_part(handle)}/cancel">'
                        f'{csrf_field(who)}<button class="danger" id="cancel">Cancel</button>'
                        "</form>")  # fmt: skip
        elif view.state != "done" and view.job_id:
            buttons += (f'<form method="post" action="/jobs/{path_part(handle)}/retry">'
                        f'{csrf_field(who)}<button id="retry">Retry</button></form>')  # fmt: skip
    events = f"/api/v1/jobs/{path_part(handle)}/events"
    sections = [
        f'<h1>{escape(view.name or handle)}</h1><div class="actions">{buttons}</div>',
        f'<table class="facts">{table}</table>',
        '<h2>Progress</h2><pre id="progress" class="log" '
        f'data-events="{escape(events)}" data-ended="{str(ended).lower()}">'
        + ("" if not ended else "(see the summary and run.log)")
        + "</pre>",
    ]
    if view.summary:
        sections.append(f'<h2>Summary</h2><pre class="summary">{escape(view.summary)}</pre>')
    if view.job_id and view.out_dir is not None:
        patch = read_regular(view.out_dir / "changes.patch", PATCH_LIMIT)
        if patch:
            sections.append("<h2>Changes</h2><pre class=\"diff\">"
                            f"{_diff(patch.decode('utf-8', 'replace'))}</pre>")  # fmt: skip
        files = " · ".join(
            f'<a href="/api/v1/jobs/{path_part(handle)}/files/{name}">{name}</a>'
            for name in ("summary.md", "changes.patch", "run.log", "exit.json")
        )
        sections.append(f'<p class="files">{files}</p>')
    return view.name or handle, "".join(sections)


@needs("read")
async def job_page(request: web.Request) -> web.StreamResponse:
    who = caller(request)
    loop = asyncio.get_running_loop()
    title, body = await loop.run_in_executor(None, _job_body, request, who)
    return page(title, body, who)


@needs("admin")
async def cancel_from_page(request: web.Request) -> web.StreamResponse:
    ref = find(request)
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, cancel, root_of(request).layout,
                                   request.match_info["job"], caller(request).who)  # fmt: skip
    except OSError as exc:
        raise web.HTTPServiceUnavailable(
            text=f"cannot write the cancel request: {exc.strerror or exc}"
        ) from exc
    raise web.HTTPSeeOther(f"/jobs/{path_part(ref.job_id or ref.name or '')}")


@needs("admin")
async def retry_from_page(request: web.Request) -> web.StreamResponse:
    ref = find(request)
    if ref.job_id is None:
        raise web.HTTPConflict(text="a queued job cannot be retried")
    loop = asyncio.get_running_loop()
    try:
        target = await loop.run_in_executor(None, Spool(root_of(request).layout).requeue,
                                            ref.job_id)  # fmt: skip
    except NotRetryable as exc:
        raise web.HTTPConflict(text=str(exc)) from exc
    except OSError as exc:
        raise web.HTTPServiceUnavailable(
            text=f"cannot retry: cannot move the job into the inbox: {exc.strerror or exc}"
        ) from exc
    raise web.HTTPSeeOther(f"/jobs/{path_part(target.name)}")


@needs("submit")
async def submit_from_page(request: web.Request) -> web.StreamResponse:
    try:
        form = await asyncio.wait_for(request.post(), BODY_SECONDS)
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="the request body did not arrive in time") from None
    name, text = form.get("name"), form.get("job")
    if not isinstance(name, str) or not isinstance(text, str):
        raise web.HTTPBadRequest(text="name and job are needed")
    data = text.replace("\r\n", "\n").encode()
    if len(data) > MAX_JOB_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_JOB_BYTES, actual_size=len(data))
    loop = asyncio.get_running_loop()
    try:
        dropped, _ = await loop.run_in_executor(None, submit, root_of(request).config, name, data)
    except (InvalidJob, BadName) as exc:
        body = f"<h1>Not submitted</h1><p class=\"error\">{escape(f'{name}: {exc}')}</p>" \
               '<p><a href="/">back</a></p>'  # fmt: skip
        response = page("Not submitted", body, caller(request))
        response.set_status(422)
        return response
    except OSError as exc:
        raise web.HTTPServiceUnavailable(
            text=f"cannot write into the inbox: {exc.strerror or exc}"
        ) from exc
    raise web.HTTPSeeOther(f"/jobs/{path_part(dropped.path.name)}")


# -- logging in ---------------------------------------------------------------------------


def csrf_field(who: Caller) -> str:
    if who.session is None:
        return ""
    return f'<input type="hidden" name="csrf" value="{escape(who.session.csrf)}">'


def _safe_next(value: object) -> str:
    """Only a path of this server: never //host or a scheme (an open redirect)."""
    # Printable ASCII only: a URL parser drops tabs and newlines, so "/\t/evil" is "//evil".
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//") \
            and "\\" not in value and all("!" <= c <= "~" for c in value):  # fmt: skip
        return value
    return "/"


async def login_form(request: web.Request) -> web.StreamResponse:
    next_path = _safe_next(request.query.get("next"))
    body = f"""<div class="login"><h1>watcherd</h1>
<form method="post" action="/login"><input type="hidden" name="next" value="{escape(next_path)}">
<label>API token <input type="password" name="token" id="token" autocomplete="off" required
autofocus></label><button id="login">Log in</button></form>
<p class="hint">Make one with <code>watcherd token add NAME --scope read</code>.</p></div>"""
    return page("Log in", body)


def make_login(
    tokens: TokenStore, sessions: Sessions, secure: bool, origin: Callable[[web.Request], str]
) -> Handler:
    async def login(request: web.Request) -> web.StreamResponse:
        sent = request.headers.get("Origin")
        if sent is not None and sent != origin(request):  # login CSRF: a session of theirs
            return problem(403, f"cross-origin login refused (Origin {sent!r})")
        data = await read_body(request, 4096)
        form = parse_qs(data.decode("utf-8", "replace"))
        presented = (form.get("token") or [""])[0].strip()
        token = tokens.find(presented) if presented else None
        if token is None:
            await asyncio.sleep(0.5)
            body = ('<div class="login"><h1>watcherd</h1><p class="error">That token is not '
                    'valid.</p><p><a href="/login">try again</a></p></div>')  # fmt: skip
            response = page("Log in", body)
            response.set_status(401)
            return response
        session_id, _ = sessions.open(token)
        response = web.HTTPSeeOther(_safe_next((form.get("next") or ["/"])[0]))
        response.set_cookie(SESSION_COOKIE, session_id, max_age=SESSION_SECONDS, httponly=True,
                            samesite="Strict", secure=secure, path="/")  # fmt: skip
        raise response

    return login


def make_logout(sessions: Sessions) -> Handler:
    @needs("read")
    async def logout(request: web.Request) -> web.StreamResponse:
        sessions.close(request.cookies.get(SESSION_COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    return logout
