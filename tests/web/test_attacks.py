"""Attacks on ``serve`` from outside (a network path to the port) and from the shared
folder, each against a real server on a loopback port, with real files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from dataclasses import replace

import pytest
import requests

from tests.support.helpers import wait_for
from tests.web.conftest import Served, start_serving
from tests.web.test_api import JOB
from tests.web.test_pages import logged_in
from watcherd.config.serve import ServeSettings
from watcherd.spool.folders import Layout, Spool
from watcherd.web.tokens import add_token, remove_token


def test_login_never_redirects_off_the_server_through_control_characters(
    served: Served,
) -> None:
    # A URL parser (a browser's, yarl's) drops tabs and newlines: "/\t/evil" is "//evil".
    for sneaky in ("/\t/evil.example/x", "/\n/evil.example", "/\r/evil.example", "/ /evil.example",
                   "/\x00/evil.example", "/\x7f/evil.example"):  # fmt: skip
        answer = requests.post(served.base + "/login", timeout=10, allow_redirects=False,
                               data={"token": served.tokens["read"], "next": sneaky})  # fmt: skip
        assert answer.status_code == 303
        assert answer.headers["Location"] == "/", sneaky
        form = requests.get(served.base + "/login", params={"next": sneaky}, timeout=10).text
        assert 'name="next" value="/"' in form, sneaky
    # Sent to log in from a page, the way back is the page's path, encoded.
    away = requests.get(served.base + "/jobs/fix%0942%E2%98%83", headers={"Accept": "text/html"},
                        allow_redirects=False, timeout=10)  # fmt: skip
    assert away.headers["Location"] == "/login?next=/jobs/fix%250942%25E2%2598%2583"
    form = requests.get(served.base + away.headers["Location"], timeout=10).text
    assert 'name="next" value="/jobs/fix%0942%E2%98%83"' in form
    # A path of this server with a query is kept as it is.
    form = {"token": served.tokens["read"], "next": "/?state=failed"}
    kept = requests.post(served.base + "/login", data=form, timeout=10, allow_redirects=False)
    assert kept.headers["Location"] == "/?state=failed"


def test_a_session_ends_with_its_token_even_when_the_name_is_given_again(
    served: Served,
) -> None:
    # The leaked token is removed and a new one made under the same name: the session
    # opened with the old token must not live on with the new one.
    path = served.config.root / "state" / "tokens.yaml"
    old = add_token(path, "ops", ["read", "admin"])
    served.tokens["ops"] = old
    session, _ = logged_in(served, "ops")
    assert session.get(served.base + "/api/v1/jobs", timeout=10).status_code == 200
    assert remove_token(path, "ops")
    add_token(path, "ops", ["read", "admin"])
    answer = session.get(served.base + "/api/v1/jobs", timeout=10)
    assert answer.status_code == 401


def test_an_idempotency_key_replays_its_own_job_when_the_name_was_used_again(
    served: Served,
) -> None:
    # Names are reused: the key's job is the one its first request made, not the newest
    # job of that name (another client's, perhaps).
    token = served.tokens["submit"]
    key = {"Idempotency-Key": "nightly-1"}
    first = served.post("/api/v1/jobs?name=fix", token, data=JOB, headers=key)
    assert first.status_code == 202
    claimed = Spool(Layout(served.config.root)).claim("fix.yaml")  # as the daemon does
    assert claimed is not None
    other = served.post("/api/v1/jobs?name=fix", served.tokens["admin"], data=JOB + "model: x\n")
    assert other.status_code == 202 and other.json()["id"] is None  # queued, not claimed
    again = served.post("/api/v1/jobs?name=fix", token, data=JOB, headers=key)
    assert again.status_code == 202
    assert again.json()["id"] == claimed.job_id
    assert again.json()["location"] == f"/api/v1/jobs/{claimed.job_id}"


def test_a_job_name_that_is_not_utf8_breaks_no_page(served: Served) -> None:
    # A submitter can drop b"caf\xe9.yaml" into the inbox; its name stays in the listing
    # (and in exit.json once filed). The dashboard answered 500 to everyone from then on.
    layout = Layout(served.config.root)
    with open(os.fsencode(layout.inbox) + b"/caf\xe9.yaml", "wb") as handle:
        handle.write(JOB.encode())
    with open(os.fsencode(layout.inbox) + b"/claimed\xff.yaml", "wb") as handle:
        handle.write(JOB.encode())
    claimed = Spool(layout).claim("claimed\udcff.yaml")
    assert claimed is not None
    token = served.tokens["admin"]
    for path in ("/", "/ui/jobs", f"/jobs/{claimed.job_id}"):
        answer = served.get(path, token)
        assert answer.status_code == 200, path
        assert "\ufffd" in answer.text, path
    listed = served.get("/api/v1/jobs", token)
    assert listed.status_code == 200 and len(listed.json()["jobs"]) == 2


def test_location_names_the_job_just_made_whatever_its_name(served: Served) -> None:
    # A name may hold '%', '?' and '#': unencoded in Location, "fix%2D42.yaml" led to the
    # job "fix-42" and "a?b.yaml" to "a" (another's job, which a client then cancels).
    token = served.tokens["admin"]
    for other in ("fix-42", "a", "c"):
        assert served.post(f"/api/v1/jobs?name={other}", token, data=JOB).status_code == 202
    for name in ("fix%2D42", "a?b", "c#d", "50%"):
        made = served.post("/api/v1/jobs", token, params={"name": name}, data=JOB)
        assert made.status_code == 202
        assert made.headers["Location"] == made.json()["location"]
        followed = served.get(made.headers["Location"], token)
        assert followed.status_code == 200 and followed.json()["name"] == f"{name}.yaml", name


def test_an_event_stream_ends_when_its_token_is_removed(served: Served) -> None:
    # A stream on a job that stays queued (or runs for hours) never ends by itself: the
    # token it was opened with, once removed, must not go on reading through it.
    path = served.config.root / "state" / "tokens.yaml"
    leaked = add_token(path, "leaked", ["read"])
    served.post("/api/v1/jobs?name=waits", served.tokens["submit"], data=JOB)
    stream = requests.get(served.base + "/api/v1/jobs/waits/events", stream=True, timeout=5,
                          headers={"Authorization": f"Bearer {leaked}"})  # fmt: skip
    assert stream.status_code == 200
    assert remove_token(path, "leaked")
    began = time.monotonic()
    with contextlib.suppress(requests.exceptions.ChunkedEncodingError):
        for _ in stream.iter_content(chunk_size=None):  # ends, or times out (5 s of silence)
            pass
    assert time.monotonic() - began < 4


def test_a_cancel_that_cannot_be_written_is_refused_as_json(served: Served) -> None:
    # A full disk or an unwritable cancel/: every refusal is JSON, never aiohttp's 500 page.
    served.post("/api/v1/jobs?name=stuck", served.tokens["submit"], data=JOB)
    folder = Layout(served.config.root).cancel
    folder.rmdir()
    folder.write_text("not a folder")
    answer = served.post("/api/v1/jobs/stuck/cancel", served.tokens["admin"])
    assert answer.status_code == 503
    assert "cancel" in answer.json()["error"]
    from_page = served.post("/jobs/stuck/cancel", served.tokens["admin"], allow_redirects=False)
    assert from_page.status_code == 503 and "cancel" in from_page.json()["error"]


def test_an_agent_nesting_its_events_deep_breaks_no_view(served: Served) -> None:
    # events.jsonl is the agent's to write: one line of 10,000 '[' raised RecursionError in
    # the parser (a ValueError was all it expected): the job's page and JSON answered 500,
    # its event stream broke, and `watcherd show` and `logs` stopped with a traceback.
    layout = Layout(served.config.root)
    job_id = "20261207T050000Z-deep-eeeeee"
    (layout.running / f"{job_id}.yaml").write_text(JOB)
    out = layout.out_dir(job_id)
    out.mkdir(parents=True)
    said = {"type": "item.completed", "item": {"type": "agent_message", "text": "hello"}}
    (out / "events.jsonl").write_text(json.dumps(said) + "\n" + "[" * 10000 + "\n")
    token = served.tokens["read"]
    for path in (f"/jobs/{job_id}", f"/api/v1/jobs/{job_id}"):
        assert served.get(path, token).status_code == 200, path
    (layout.done / f"{job_id}.yaml").write_text(JOB)  # filed: the stream ends
    (layout.running / f"{job_id}.yaml").unlink()
    (out / "exit.json").write_text(json.dumps({"job_id": job_id, "state": "done"}))
    stream = served.get(f"/api/v1/jobs/{job_id}/events", token)
    assert stream.status_code == 200 and "hello" in stream.text and "event: end" in stream.text


def test_an_idempotency_key_holds_when_the_daemon_claims_the_job_at_once(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With settle_seconds: 0 (or a busy machine) the daemon may claim the file between the
    # drop and the record: the record was left empty, the POST answered 503 though its job
    # was in, and every retry with the key waited a second for a 503, for good.
    from tests.support.quick_claim import claimed_at_once

    claimed: list[str] = []  # and another job takes the name: the answer is still this one's
    monkeypatch.setattr("watcherd.web.api.submit", claimed_at_once(claimed, JOB))
    token = served.tokens["submit"]
    key = {"Idempotency-Key": "fast-1"}
    first = served.post("/api/v1/jobs?name=quick", token, data=JOB, headers=key)
    assert first.status_code == 202 and first.json()["id"] == claimed[0]
    again = served.post("/api/v1/jobs?name=quick", token, data=JOB, headers=key)
    assert again.status_code == 202 and again.json()["id"] == claimed[0]
    assert len(claimed) == 1


def test_a_stream_whose_client_left_stops_at_once(served: Served) -> None:
    # Nothing is written to a quiet stream for 15 s, so a closed one was only noticed then:
    # each opened-and-closed stream left its handler polling the job twice a second for
    # that long, outside max_connections. 300 a second from one reader: 4,500 of them.
    config = replace(served.config, serve=ServeSettings(port=0))
    port, loop, stop, thread = start_serving(config)

    def handlers() -> int:
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)
        return len(asyncio.all_tasks(loop))

    try:
        served.post("/api/v1/jobs?name=quiet", served.tokens["submit"], data=JOB)
        idle = handlers()
        request = (f"GET /api/v1/jobs/quiet/events HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {served.tokens['read']}\r\n\r\n").encode()  # fmt: skip
        for _ in range(50):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(request)
                assert conn.recv(100).startswith(b"HTTP/1.1 200")
        wait_for(lambda: handlers() <= idle, 3, "the streams' handlers to end")
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def test_a_retry_that_cannot_be_moved_is_refused_as_json(served: Served) -> None:
    layout = Layout(served.config.root)
    job_id = "20261207T050000Z-flaky-aaaaaa"
    (layout.failed / f"{job_id}.yaml").write_text(JOB)
    layout.inbox.rmdir()  # a vanished inbox, a full disk, another user's folder
    for path in (f"/api/v1/jobs/{job_id}/retry", f"/jobs/{job_id}/retry"):
        answer = served.post(path, served.tokens["admin"], allow_redirects=False)
        assert answer.status_code == 503, path
        assert "retry" in answer.json()["error"], path
    assert (layout.failed / f"{job_id}.yaml").exists()


def test_a_submit_from_the_page_that_cannot_be_written_is_refused_as_json(
    served: Served,
) -> None:
    layout = Layout(served.config.root)
    layout.inbox.rmdir()
    layout.inbox.write_text("not a folder")
    answer = served.post("/submit", served.tokens["admin"], data={"name": "x", "job": JOB},
                         allow_redirects=False)  # fmt: skip
    assert answer.status_code == 503 and "inbox" in answer.json()["error"]
