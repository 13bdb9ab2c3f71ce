"""The HTTP API over a real socket: what it accepts, and every way it refuses."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from tests.support.helpers import wait_for
from tests.web.conftest import Served, start_serving
from watcherd.config.serve import ServeSettings
from watcherd.spool.folders import Layout
from watcherd.spool.names import NameIndex
from watcherd.web.tokens import TokenFileError, add_token, read_tokens, remove_token

JOB = "repo_url: https://example.com/acme/widgets.git\nprompt: fix the test\n"


def inbox(served: Served) -> list[str]:
    return sorted(p.name for p in Layout(served.config.root).inbox.iterdir())


def finished(served: Served, job_id: str, name: str, state: str, **record: object) -> None:
    """A job as the daemon files it: its file in done/ or failed/, its exit.json."""
    layout = Layout(served.config.root)
    folder = layout.done if state == "done" else layout.failed
    (folder / f"{job_id}.yaml").write_text(JOB)
    out = layout.out_dir(job_id)
    out.mkdir(parents=True)
    (out / "exit.json").write_text(json.dumps({
        "job_id": job_id, "job_file": name, "state": state, "reason": "finished",
        "attempts": 1, "started_at": "2026-12-07T05:00:00.000000Z",
        "finished_at": "2026-12-07T05:01:30.000000Z", "agent": "codex",
        "repo_url": "https://example.com/acme/widgets.git",
        "usage": {"input_tokens": 100, "output_tokens": 20}, **record,
    }))  # fmt: skip
    NameIndex(layout.index).record(name, job_id)


def test_tokens_are_stored_hashed_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    token = add_token(path, "ci", ["read", "submit"])
    assert token.startswith("wdt_") and token not in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    assert [t.name for t in read_tokens(path)] == ["ci"]
    with pytest.raises(TokenFileError, match="exists"):
        add_token(path, "ci", ["read"])
    with pytest.raises(TokenFileError, match="scopes"):
        add_token(path, "other", ["root"])
    path.chmod(0o644)
    with pytest.raises(TokenFileError, match="chmod 600"):
        read_tokens(path)
    path.chmod(0o600)
    assert remove_token(path, "ci") and read_tokens(path) == ()


def test_every_endpoint_needs_a_token_of_the_right_scope(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("watcherd.web.auth.FAILURE_DELAY_SECONDS", 0.01)
    for method, path in [
        ("GET", "/api/v1/jobs"), ("POST", "/api/v1/jobs"), ("GET", "/api/v1/jobs/x"),
        ("GET", "/api/v1/jobs/x/summary"), ("GET", "/api/v1/jobs/x/patch"),
        ("GET", "/api/v1/jobs/x/files/run.log"), ("GET", "/api/v1/jobs/x/events"),
        ("POST", "/api/v1/jobs/x/cancel"), ("POST", "/api/v1/jobs/x/retry"), ("GET", "/metrics"),
    ]:  # fmt: skip
        response = requests.request(method, served.base + path, timeout=10)
        assert response.status_code == 401, (method, path)
        assert response.json()["error"].startswith("a valid token is needed")
        wrong = requests.request(method, served.base + path, timeout=10,
                                 headers={"Authorization": "Bearer wdt_nope"})  # fmt: skip
        assert wrong.status_code == 401
    # A read token on an admin action, a submit token on a read.
    assert served.post("/api/v1/jobs/x/cancel", served.tokens["read"]).status_code == 403
    assert served.post("/api/v1/jobs/x/retry", served.tokens["submit"]).status_code == 403
    assert served.post("/api/v1/jobs", served.tokens["read"], data=JOB).status_code == 403
    # Never in a URL, even a right one.
    leaked = served.get(f"/api/v1/jobs?token={served.tokens['admin']}")
    assert leaked.status_code == 400 and "never goes in a URL" in leaked.json()["error"]
    # Public: health and the API's own description.
    assert served.get("/healthz").json() == {"ok": True}
    paths = served.get("/api/v1/openapi.json").json()["paths"]
    assert "/api/v1/jobs/{job}/cancel" in paths and "post" in paths["/api/v1/jobs"]


def test_submit_yaml_or_json_and_bad_input_lands_nothing(served: Served) -> None:
    token = served.tokens["submit"]
    made = served.post("/api/v1/jobs?name=fix-1", token, data=JOB,
                       headers={"Content-Type": "application/yaml"})  # fmt: skip
    assert made.status_code == 202, made.text
    assert made.headers["Location"] == "/api/v1/jobs/fix-1.yaml"
    assert made.json()["state"] == "queued"
    job = {"repo_url": "https://example.com/a/b.git", "prompt": "p"}
    as_json = served.post("/api/v1/jobs?name=fix-2", token, json=job)
    assert as_json.status_code == 202
    assert inbox(served) == ["fix-1.yaml", "fix-2.yaml"]
    for body, status, words in [
        ("repo_url: [unclosed\n", 422, "YAML"),
        (JOB + "image: evil:latest\n", 422, "image"),
        ("- a list\n", 422, "mapping"),
        (b"\xff\xfe" + JOB.encode(), 422, "UTF-8"),
    ]:
        refused = served.post("/api/v1/jobs?name=bad", token, data=body)
        assert refused.status_code == status, (body, refused.text)
        assert words in refused.json()["error"], refused.json()
    too_big = served.post("/api/v1/jobs?name=big", token, data=JOB + "#" * 70_000)
    assert too_big.status_code == 413
    for name in ("../escape", ".hidden", "a/b"):
        assert served.post(f"/api/v1/jobs?name={name}", token, data=JOB).status_code == 400
    bad_json = served.post(
        "/api/v1/jobs", token, data="{", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert inbox(served) == ["fix-1.yaml", "fix-2.yaml"]


def test_an_idempotency_key_makes_one_job_however_often_it_is_sent(served: Served) -> None:
    token = served.tokens["submit"]
    headers = {"Idempotency-Key": "run-7"}
    first = served.post("/api/v1/jobs?name=once", token, data=JOB, headers=headers)
    again = served.post("/api/v1/jobs?name=once", token, data=JOB, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["location"] == again.json()["location"]
    assert inbox(served) == ["once.yaml"]
    other = served.post("/api/v1/jobs?name=once", token, data=JOB + "model: x\n", headers=headers)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["error"]


def test_list_filter_page_show_and_outputs(served: Served) -> None:
    token = served.tokens["read"]
    for n in range(5):
        finished(served, f"20261207T05000{n}Z-job{n}-aaaaa{n}", f"job{n}.yaml",
                 "done" if n % 2 else "failed")  # fmt: skip
    served.post("/api/v1/jobs?name=queued", served.tokens["submit"], data=JOB)
    listed = served.get("/api/v1/jobs?limit=2", token).json()
    assert [j["name"] for j in listed["jobs"]] == ["queued.yaml", "job4.yaml"]
    rest = served.get(f"/api/v1/jobs?limit=10&cursor={listed['next_cursor']}", token).json()
    assert [j["name"] for j in rest["jobs"]] == ["job3.yaml", "job2.yaml", "job1.yaml", "job0.yaml"]
    assert rest["next_cursor"] is None
    done = served.get("/api/v1/jobs?state=done", token).json()["jobs"]
    assert {j["name"] for j in done} == {"job1.yaml", "job3.yaml"}
    assert served.get("/api/v1/jobs?nope=1", token).status_code == 400
    assert served.get("/api/v1/jobs?cursor=%%%", token).status_code == 400
    one = served.get("/api/v1/jobs/job1", token).json()
    assert one["state"] == "done" and one["id"] == "20261207T050001Z-job1-aaaaa1"
    out = Layout(served.config.root).out_dir(one["id"])
    (out / "summary.md").write_text("# ok")
    (out / "secret.txt").write_text("not an output")
    assert served.get("/api/v1/jobs/job1/summary", token).text == "# ok"
    assert served.get("/api/v1/jobs/job1/files/secret.txt", token).status_code == 404
    assert served.get("/api/v1/jobs/job1/files/..%2Fexit.json", token).status_code == 404
    assert served.get("/api/v1/jobs/..%2F..%2Fetc", token).status_code in (400, 404)
    assert served.get("/api/v1/jobs/job1/patch", token).status_code == 404  # none written
    metrics = served.get("/metrics", token).text
    assert 'watcherd_jobs{state="done"} 2' in metrics and "watcherd_queue_depth 1" in metrics
    assert 'watcherd_job_duration_seconds_bucket{le="120"} 5' in metrics


def test_cancel_and_retry_through_the_api(served: Served) -> None:
    admin = served.tokens["admin"]
    served.post("/api/v1/jobs?name=later", admin, data=JOB)
    asked = served.post("/api/v1/jobs/later/cancel", admin)
    assert asked.status_code == 202 and asked.json()["answer"] == "requested"
    again = served.post("/api/v1/jobs/later/cancel", admin)
    assert again.json()["answer"] == "already requested"
    request = next((served.config.root / "cancel").glob("queued-*.json"))
    assert json.loads(request.read_text())["by"] == "token admin (api)"
    finished(served, "20261207T050000Z-old-bbbbbb", "old.yaml", "done")
    assert served.post("/api/v1/jobs/old/cancel", admin).status_code == 409  # it ended
    assert served.post("/api/v1/jobs/nothing/cancel", admin).status_code == 404
    finished(served, "20261207T050001Z-bad-cccccc", "bad.yaml", "failed")
    retried = served.post("/api/v1/jobs/bad/retry", admin)
    assert retried.status_code == 202 and retried.json()["name"].startswith("bad-retry-")
    assert served.post("/api/v1/jobs/old/retry", admin).status_code == 409  # done: not failed


def test_events_stream_the_rendered_progress_and_resume(served: Served) -> None:
    job_id = "20261207T050000Z-talk-dddddd"
    finished(served, job_id, "talk.yaml", "done")
    fixture = Path(__file__).parent.parent / "fixtures" / "codex" / "exec-commands.jsonl"
    (Layout(served.config.root).out_dir(job_id) / "events.jsonl").write_bytes(fixture.read_bytes())
    stream = served.get(f"/api/v1/jobs/{job_id}/events", served.tokens["read"], stream=True)
    assert stream.headers["Content-Type"] == "text/event-stream"
    text = stream.text
    ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 3
    assert "echo hello" in text and "event: end" in text
    resumed = served.get(f"/api/v1/jobs/{job_id}/events", served.tokens["read"],
                         headers={"Last-Event-ID": str(ids[-2])}).text  # fmt: skip
    assert [int(x[4:]) for x in resumed.splitlines() if x.startswith("id: ")] == [ids[-1]]


def test_a_slow_body_is_cut_off_and_connections_are_bounded(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("watcherd.web.api.BODY_SECONDS", 0.5)
    host, port = served.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(
            f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            f"Authorization: Bearer {served.tokens['submit']}\r\n\r\nrepo".encode()
        )
        began = time.monotonic()
        answer = slow.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 408") and time.monotonic() - began < 5
    assert inbox(served) == []


def test_idle_connections_are_bounded(served: Served) -> None:
    config = replace(served.config, serve=ServeSettings(port=0, max_connections=5))
    port, loop, stop, thread = start_serving(config)
    try:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(5)]
        for conn in idle:  # each one really held by the server before the next arrives
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        over = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
        for conn in over:  # told at once and closed: never held, never queued
            assert conn.recv(4096).startswith(b"HTTP/1.1 503")
            assert conn.recv(4096) == b""
        for conn in [*idle, *over]:
            conn.close()
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok, 10,
                 "a free place again")  # fmt: skip
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def test_idempotency_keys_expire_and_an_abandoned_one_is_taken_over(served: Served) -> None:
    token = served.tokens["submit"]
    folder = served.config.root / "state" / "idempotency"
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / hashlib.sha256(b"submitter\0crashed").hexdigest()
    record.touch()  # a server died between taking the key and writing what it made
    old = time.time() - 120
    os.utime(record, (old, old))
    stale = folder / ("0" * 64)
    stale.write_text("{}")
    os.utime(stale, (old - 2 * 86400, old - 2 * 86400))
    made = served.post("/api/v1/jobs?name=after-crash", token, data=JOB,
                       headers={"Idempotency-Key": "crashed"})  # fmt: skip
    assert made.status_code == 202, made.text
    assert inbox(served) == ["after-crash.yaml"] and record.stat().st_size > 0
    assert not stale.exists()  # a day-old key is forgotten
