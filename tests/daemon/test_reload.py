"""SIGHUP: the config is read again; what is safe is applied, the rest waits for a restart."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helpers import DaemonProcess, wait_finished, wait_for, write_job
from tests.support.notify_socket import NotifySocket
from watcherd.config import Config, ConfigError
from watcherd.config.mcp import McpSettings
from watcherd.daemon.reload import RELOADABLE, plan_reload, reload_config

StartDaemon = Callable[..., DaemonProcess]


# -- what a reload applies -------------------------------------------------------------


def test_reloadable_settings_are_applied_the_others_wait_for_a_restart() -> None:
    running = Config(root=Path("/work"), concurrency=2, image="old:1")
    loaded = Config(
        root=Path("/elsewhere"),
        concurrency=4,
        memory_limit=1024**3,
        image="new:2",
        extra_env={"TOKEN": "secret-value"},
    )
    plan = plan_reload(running, loaded)
    assert plan.config == running.replace(
        concurrency=4, memory_limit=1024**3, extra_env={"TOKEN": "secret-value"}
    )
    assert plan.needs_restart == ("root", "image")
    assert plan.applied == (
        "concurrency 2 -> 4",
        f"memory_limit {4 * 1024**3} -> {1024**3}",
        "extra_env now sets TOKEN",  # never the value: it may be a secret
    )


def test_nothing_changed_plans_nothing() -> None:
    plan = plan_reload(Config(), Config())
    assert plan == type(plan)(Config(), (), ())


def test_every_reloadable_name_is_a_setting() -> None:
    assert RELOADABLE.issubset(Config.__dataclass_fields__)


def test_a_config_that_does_not_load_keeps_the_running_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = Config(concurrency=3)

    def broken() -> Config:
        raise ConfigError("/etc/watcherd/config.yaml: setting 'concurrency': nope")

    def crashing() -> Config:
        raise RuntimeError("unexpected")

    with caplog.at_level(logging.INFO):
        assert reload_config(running, broken) is running
        assert reload_config(running, crashing) is running
        assert reload_config(running, None) is running
    assert "config reload failed, keeping the running config: /etc/watcherd" in caplog.text
    assert "RuntimeError: unexpected" in caplog.text
    assert "no config file to re-read" in caplog.text


def test_reload_logs_what_it_did(caplog: pytest.LogCaptureFixture) -> None:
    running = Config()
    with caplog.at_level(logging.INFO):
        reloaded = reload_config(running, lambda: Config(concurrency=5, docker_host="tcp://x"))
    assert reloaded == running.replace(concurrency=5)
    assert "config reloaded: concurrency 2 -> 5" in caplog.text
    assert "docker_host changed but needs a restart; not applied" in caplog.text


# -- a real daemon -----------------------------------------------------------------------


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def rewrite_config(daemon: DaemonProcess, text: str | None = None, **changes: Any) -> None:
    """Replace the daemon's config file in one rename, as an editor or a deploy would."""
    if text is None:
        settings = yaml.safe_load(daemon.config_path.read_text())
        text = yaml.safe_dump({**settings, **changes})
    tmp = daemon.config_path.with_suffix(".tmp")
    tmp.write_text(text)
    os.rename(tmp, daemon.config_path)


def reload(daemon: DaemonProcess, listener: NotifySocket) -> str:
    """SIGHUP, then wait for the reload to finish; returns the log it wrote."""
    assert daemon.proc is not None
    reloads_before = sum(text.startswith("RELOADING=1") for text in listener.texts())
    log_before = len(daemon.log())
    daemon.proc.send_signal(signal.SIGHUP)

    def finished() -> bool:
        texts = listener.texts()
        reloading = [i for i, text in enumerate(texts) if text.startswith("RELOADING=1")]
        return len(reloading) > reloads_before and any(
            text.startswith("READY=1") for text in texts[reloading[-1] :]
        )

    wait_for(finished, 10, "RELOADING=1, then READY=1")
    return daemon.log()[log_before:]


@pytest.mark.docker
def test_sighup_applies_concurrency_and_keeps_settings_that_need_a_restart(
    work_root: Path, listener: NotifySocket, start_daemon: StartDaemon, repo_url: str
) -> None:
    daemon = start_daemon(env=listener.environ(), concurrency=1)
    rewrite_config(daemon, concurrency=2, image="watcherd-test-no-such-image:1")
    log = reload(daemon, listener)
    assert "received SIGHUP, reloading the config" in log
    assert "config reloaded: concurrency 1 -> 2" in log
    assert "image changed but needs a restart; not applied" in log

    inbox = work_root / "inbox"
    for name in ("a.yaml", "b.yaml"):
        write_job(inbox, name, repo_url=repo_url, prompt="sleep 2", repo_dir=name[0])
    runs = []
    for name in ("a.yaml", "b.yaml"):
        folder, path = wait_finished(work_root, name)
        assert folder == "done"  # the old image, not the one that needs a restart
        record = json.loads((work_root / "out" / path.stem / "exit.json").read_text())
        runs.append((record["started_at"], record["finished_at"]))
    (a_start, a_end), (b_start, b_end) = runs
    assert a_start < b_end and b_start < a_end  # they ran at the same time: concurrency 2
    assert daemon.alive()


@pytest.mark.docker
def test_a_broken_config_is_ignored_and_the_daemon_keeps_serving(
    work_root: Path, listener: NotifySocket, start_daemon: StartDaemon, repo_url: str
) -> None:
    daemon = start_daemon(env=listener.environ())
    original = daemon.config_path.read_text()

    rewrite_config(daemon, text="concurrency: [2\n")
    log = reload(daemon, listener)
    assert "config reload failed, keeping the running config" in log
    assert "not valid YAML" in log

    rewrite_config(daemon, text=original.replace("concurrency: 2", "concurrency: 0"))
    log = reload(daemon, listener)
    assert "config reload failed, keeping the running config" in log
    assert "concurrency must be at least 1" in log

    assert daemon.alive()
    write_job(work_root / "inbox", "after.yaml", repo_url=repo_url, prompt="succeed")
    assert wait_finished(work_root, "after.yaml")[0] == "done"


def test_the_mcp_section_never_needs_the_daemon_restarted() -> None:
    # `watcherd mcp` reads it when it starts; the daemon never does.
    plan = plan_reload(Config(), Config(mcp=McpSettings(read_only=True)))
    assert plan.needs_restart == ()
    assert plan.config.mcp.read_only
