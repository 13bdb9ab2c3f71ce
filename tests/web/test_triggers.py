"""Hooks and schedules over HTTP: a signed delivery makes one job, an unsigned one none; the
operator's schedules listed, paused and run from an admin token only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from tests.triggers.test_hooks import SECRET, comment_event, hooks_config
from tests.web.conftest import Served, start_serving
from watcherd.config.load import _build
from watcherd.config.serve import ServeSettings
from watcherd.triggers.hooks import sign


@pytest.fixture
def with_triggers(served: Served, tmp_path: Path) -> Iterator[Served]:
    secret = tmp_path / "hook.secret"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)
    raw = {
        "root": str(served.config.root),
        "allowed_protocols": ["file", "https"],
        "hooks": hooks_config(served.config.root, secret),
        "schedules": {"nightly": {"cron": "0 3 * * *", "timezone": "Europe/Berlin",
                                  "job": {"repo_url": "https://example.com/a/b.git",
                                          "prompt": "check the dependencies"}}},
    }  # fmt: skip
    config = replace(_build(raw, "test"), serve=ServeSettings(port=0))
    port, loop, stop, thread = start_serving(config)
    yield Served(config, f"http://127.0.0.1:{port}", served.tokens)
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


def inbox(served: Served) -> list[str]:
    return sorted(p.name for p in (served.config.root / "inbox").iterdir()
                  if not p.name.startswith("."))  # fmt: skip


def deliver(
    served: Served, body: bytes, signature: str | None, delivery: str = "d-1"
) -> requests.Response:
    headers = {"X-GitHub-Event": "issue_comment", "X-GitHub-Delivery": delivery,
               "Content-Type": "application/json"}  # fmt: skip
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return requests.post(served.base + "/api/v1/hooks/triage", data=body, headers=headers,
                         timeout=10)  # fmt: skip


def test_a_signed_delivery_makes_one_job_and_nothing_else_does(with_triggers: Served) -> None:
    body = json.dumps(comment_event()).encode()
    assert deliver(with_triggers, body, None).status_code == 401
    assert deliver(with_triggers, body, "sha256=" + "0" * 64).status_code == 401
    assert inbox(with_triggers) == []
    made = deliver(with_triggers, body, sign(SECRET, body))
    assert made.status_code == 202, made.text
    again = deliver(with_triggers, body, sign(SECRET, body))  # GitHub redelivers
    assert again.status_code == 200
    assert len(inbox(with_triggers)) == 1
    big = b" " * (300 * 1024)
    assert deliver(with_triggers, big, sign(SECRET, big), "d-2").status_code == 413
    # An unknown name is answered as a known one without the secret: no names to find.
    for data in (b"{}", big):
        known = requests.post(with_triggers.base + "/api/v1/hooks/triage", data=data, timeout=10)
        unknown = requests.post(with_triggers.base + "/api/v1/hooks/nope", data=data, timeout=10)
        assert unknown.status_code == known.status_code == (401 if data == b"{}" else 413)
        assert unknown.json() == known.json()
    assert len(inbox(with_triggers)) == 1


def test_schedules_are_listed_to_readers_and_steered_by_admins(with_triggers: Served) -> None:
    listed = with_triggers.get("/api/v1/schedules", with_triggers.tokens["read"]).json()
    (nightly,) = listed["schedules"]
    assert nightly["id"] == "nightly" and len(nightly["next"]) == 3 and nightly["paused"] is None
    read = with_triggers.tokens["read"]
    assert with_triggers.post("/api/v1/schedules/nightly/pause", read).status_code == 403
    admin = with_triggers.tokens["admin"]
    paused = with_triggers.post("/api/v1/schedules/nightly/pause", admin)
    assert paused.json() == {"schedule": "nightly", "action": "pause", "changed": True}
    again = with_triggers.get("/api/v1/schedules", read).json()["schedules"][0]
    assert again["paused"]["by"] == "token admin (api)"
    ran = with_triggers.post("/api/v1/schedules/nightly/run-now", admin)
    assert ran.status_code == 202 and ran.json()["outcome"] == "dropped"
    assert len(inbox(with_triggers)) == 1
    assert with_triggers.post("/api/v1/schedules/other/pause", admin).status_code == 404
    assert with_triggers.post("/api/v1/schedules/nightly/explode", admin).status_code == 404
    page = with_triggers.get("/schedules", admin, headers={"Accept": "text/html"})
    assert page.status_code == 200 and "0 3 * * *" in page.text and "resume" in page.text
