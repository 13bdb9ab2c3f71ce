"""Notifications: the signature, webhooks on loopback (retries, no redirects), commands,
and a queue that never blocks a job."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import wait_for
from tests.support.webhook import Receiver
from watcherd.config import Config
from watcherd.config.notify import CommandTarget, WebhookTarget
from watcherd.notify.deliver import (
    SIGNATURE_HEADER,
    DeliveryFailed,
    Notifications,
    post_webhook,
    read_secret,
    run_command,
    sign,
    verify,
)


def test_the_signature_is_hmac_sha256_of_the_body() -> None:
    # RFC 4231, test case 2.
    expected = "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert sign(b"Jefe", b"what do ya want for nothing?") == expected
    assert verify(b"Jefe", b"what do ya want for nothing?", expected)
    assert not verify(b"Jefe", b"what do ya want for nothing!", expected)
    assert not verify(b"other", b"what do ya want for nothing?", expected)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "hook.secret"
    path.write_text("s3cret\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def test_a_webhook_gets_the_record_signed(receiver: Receiver, secret_file: Path) -> None:
    target = WebhookTarget("team", receiver.url, secret_file)
    body = b'{"job_id": "j", "state": "done"}'
    post_webhook(target, body, "j")
    ((path, headers, received),) = receiver.requests
    assert (path, received) == ("/hook", body)
    assert verify(b"s3cret", received, headers[SIGNATURE_HEADER])
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Watcherd-Job"] == "j"


@pytest.mark.parametrize(
    ("status", "transient"), [(500, True), (503, True), (429, True), (400, False), (404, False),
                              (301, False), (307, False)],
)  # fmt: skip
def test_webhook_errors_say_whether_to_retry(
    receiver: Receiver, secret_file: Path, status: int, transient: bool
) -> None:
    receiver.statuses = [status]
    with pytest.raises(DeliveryFailed) as failed:
        post_webhook(WebhookTarget("t", receiver.url, secret_file), b"{}", "j")
    assert failed.value.transient is transient
    assert len(receiver.requests) == 1  # a redirect is not followed


def test_an_unreachable_webhook_is_transient(secret_file: Path) -> None:
    with pytest.raises(DeliveryFailed) as failed:
        post_webhook(WebhookTarget("t", "http://127.0.0.1:1/x", secret_file, 2), b"{}", "j")
    assert failed.value.transient


def test_a_secret_file_must_be_private_and_is_never_in_a_message(tmp_path: Path) -> None:
    path = tmp_path / "open.secret"
    path.write_text("hunter2")
    path.chmod(0o644)
    with pytest.raises(DeliveryFailed) as failed:
        read_secret(path)
    assert "chmod 600" in str(failed.value) and "hunter2" not in str(failed.value)
    with pytest.raises(DeliveryFailed):
        read_secret(tmp_path / "missing")


def test_a_command_gets_the_record_on_stdin_without_a_shell(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = (
        "import json, os, sys; data = sys.stdin.read(); "
        f"open({str(out)!r}, 'w').write(json.dumps([data, os.environ['WATCHERD_JOB_ID'], "
        "os.environ['WATCHERD_JOB_STATE'], sys.argv[1]]))"
    )
    target = CommandTarget("cmd", (sys.executable, "-c", script, "$HOME;true"))
    run_command(target, b'{"state": "done"}', "job-1", "done")
    assert json.loads(out.read_text()) == ['{"state": "done"}', "job-1", "done", "$HOME;true"]


def test_a_failing_or_slow_command_is_reported_and_killed(tmp_path: Path) -> None:
    failing = CommandTarget("cmd", (sys.executable, "-c", "import sys; sys.exit('no route')"))
    with pytest.raises(DeliveryFailed, match="exited with 1: no route"):
        run_command(failing, b"{}", "j", "done")
    began = time.monotonic()
    slow = CommandTarget("cmd", (sys.executable, "-c", "import time; time.sleep(60)"), 0.5)
    with pytest.raises(DeliveryFailed, match=r"timed out after 0\.5s"):
        run_command(slow, b"{}", "j", "done")
    assert time.monotonic() - began < 10
    with pytest.raises(DeliveryFailed) as missing:
        run_command(CommandTarget("cmd", (str(tmp_path / "nope"),)), b"{}", "j", "done")
    assert not missing.value.transient


def finished_job(root: Path, job_id: str, state: str = "done") -> None:
    out = root / "out" / job_id
    out.mkdir(parents=True)
    (out / "exit.json").write_text(json.dumps({"job_id": job_id, "state": state}))


def test_deliveries_are_retried_with_backoff_then_given_up(
    tmp_path: Path, receiver: Receiver, secret_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="watcherd.notify")
    receiver.statuses = [500, 502, 500, 500]
    config = Config(root=tmp_path, notify={"team": WebhookTarget("team", receiver.url,
                    secret_file)}, notify_default=("team",))  # fmt: skip
    finished_job(tmp_path, "job-1")
    notifications = Notifications(attempts=3, backoff=(0.05, 0.1))
    notifications.notify(config, "job-1", None)
    wait_for(lambda: "failed after 3 attempt(s): HTTP 500" in caplog.text, 10, "giving up")
    assert len(receiver.requests) == 3
    notifications.notify(config, "job-1", None)  # the 4th answer is a 500, then 204s
    wait_for(lambda: "notified team" in caplog.text, 10, "delivered")
    assert str(receiver.url) not in caplog.text  # a URL may hold a token: never logged
    notifications.close(grace=1)


def test_a_full_queue_drops_rather_than_blocks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate = tmp_path / "gate"
    wait_gate = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)"
    target = CommandTarget("slow", (sys.executable, "-c", wait_gate), 30)
    config = Config(root=tmp_path, notify={"slow": target}, notify_default=("slow",))
    finished_job(tmp_path, "job-1")
    notifications = Notifications(workers=1, queue_size=1)
    began = time.monotonic()
    for _ in range(4):  # one taken by the worker, one queued, two dropped
        notifications.notify(config, "job-1", None)
    assert time.monotonic() - began < 1
    wait_for(lambda: caplog.text.count("dropped") >= 1, 5, "a drop")
    gate.touch()
    notifications.close(grace=10)
