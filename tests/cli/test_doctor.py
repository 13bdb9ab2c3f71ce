"""doctor: each check, on a machine that has what it needs and on one that lacks it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.util.test_loopfs import needs_loop
from watcherd.cli.doctor import CLOCK_FLOOR, Check, base_images, format_checks, run_checks
from watcherd.config import Config
from watcherd.config.notify import WebhookTarget
from watcherd.config.publish import ForgeSettings, PublishSettings
from watcherd.config.relay import RelaySettings
from watcherd.relay.credential import ensure_credential

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
BUILT = datetime(2026, 11, 20, tzinfo=UTC)


@dataclass
class FakeEngine:
    live: bool = True
    manager: bool = True
    sees_mounts: bool = True  # as the Engine on this host does, for a daemon on the host
    images: dict[str, datetime] = field(
        default_factory=lambda: {"watcherd-codex:0.171.0": BUILT, "debian:bookworm-slim": BUILT}
    )

    def ping(self) -> str:
        return "27.0.1"

    def live_restore(self) -> bool:
        return self.live

    def image_created(self, name: str) -> datetime | None:
        return self.images.get(name)

    def swarm_manager(self) -> bool:
        return self.manager

    def read_mounted(self, folder: Path, name: str, image: str) -> bytes | None:
        return (folder / name).read_bytes() if self.sees_mounts else None


def unreachable() -> FakeEngine:
    raise ConnectionError("connection refused")


@pytest.fixture
def dockerfile(tmp_path: Path) -> Path:
    path = tmp_path / "Dockerfile"
    path.write_text(
        "ARG BASE_IMAGE=debian:bookworm-slim\nFROM ${BASE_IMAGE} AS fetch\nRUN x\n"
        "FROM ${BASE_IMAGE}\nCOPY --from=fetch /a /a\n"
    )
    return path


def healthy(tmp_path: Path) -> Config:
    root = tmp_path / "work"
    (root / "inbox").mkdir(parents=True)
    (root / ".codex-bot").mkdir(mode=0o700)
    (root / ".codex-bot" / "auth.json").write_text("{}")
    return Config(root=root, min_free_disk=0)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def test_a_healthy_machine_passes_every_check(tmp_path: Path, dockerfile: Path) -> None:
    checks = run_checks(healthy(tmp_path), FakeEngine, NOW, dockerfile)
    assert all(check.ok for check in checks), format_checks(checks)
    assert set(by_name(checks)) == {
        "engine", "live-restore", "worker image", "base image", "login", "root", "disk",
        "disk bound", "clock", "inbox", "network",
    }  # fmt: skip


def test_the_swarm_backend_needs_a_manager_not_live_restore(
    tmp_path: Path, dockerfile: Path
) -> None:
    config = healthy(tmp_path).replace(backend="swarm")
    checks = by_name(run_checks(config, FakeEngine, NOW, dockerfile))
    assert "live-restore" not in checks and checks["swarm"].ok
    checks = by_name(run_checks(config, lambda: FakeEngine(manager=False), NOW, dockerfile))
    assert not checks["swarm"].ok and "docker swarm init" in checks["swarm"].fix


def test_on_swarm_doctor_says_where_relays_connect_and_refuses_an_open_credential(
    tmp_path: Path, dockerfile: Path
) -> None:
    config = healthy(tmp_path).replace(backend="swarm")
    relays = by_name(run_checks(config, FakeEngine, NOW, dockerfile))["relays"]
    assert relays.ok and relays.warning and "rejected there" in relays.detail
    credential = ensure_credential(tmp_path / "relay.pem")
    config = config.replace(relay=RelaySettings(("10.0.0.5", 7433), credential=credential))
    relays = by_name(run_checks(config, FakeEngine, NOW, dockerfile))["relays"]
    assert relays.ok and not relays.warning and "10.0.0.5:7433" in relays.detail
    credential.chmod(0o644)
    relays = by_name(run_checks(config, FakeEngine, NOW, dockerfile))["relays"]
    assert not relays.ok and "chmod 600" in relays.detail


def test_what_is_missing_is_named_with_a_fix(tmp_path: Path, dockerfile: Path) -> None:
    config = Config(root=tmp_path / "nowhere", min_free_disk=1)
    engine = FakeEngine(live=False, images={})
    checks = by_name(run_checks(config, lambda: engine, CLOCK_FLOOR.replace(year=2020),
                                dockerfile))  # fmt: skip
    failed = {name for name, check in checks.items() if not check.ok}
    assert failed == {"live-restore", "worker image", "base image", "login", "root", "disk",
                      "clock", "inbox"}  # fmt: skip
    assert "live-restore" in checks["live-restore"].fix
    assert checks["worker image"].fix.startswith("watcherd image build")
    assert checks["base image"].fix.startswith("docker pull debian:bookworm-slim")
    assert "watcherd login" in checks["login"].fix
    assert checks["root"].fix == f"install -d {tmp_path / 'nowhere'}"
    for line in format_checks(list(checks.values())):
        assert line.startswith("ok  ") or "; fix: " in line


def test_no_engine_fails_what_needs_one(tmp_path: Path, dockerfile: Path) -> None:
    checks = by_name(run_checks(healthy(tmp_path), unreachable, NOW, dockerfile))
    assert not checks["engine"].ok and "connection refused" in checks["engine"].detail
    assert not checks["worker image"].ok and checks["root"].ok


def test_a_base_image_is_needed_only_to_build(tmp_path: Path, dockerfile: Path) -> None:
    engine = FakeEngine(images={"watcherd-codex:0.171.0": BUILT})
    (base,) = [c for c in run_checks(healthy(tmp_path), lambda: engine, NOW, dockerfile)
               if c.name == "base image"]  # fmt: skip
    assert base.ok and "needed only to build" in base.detail
    assert base_images(dockerfile) == ["debian:bookworm-slim"]


def test_the_clock_must_not_be_before_the_worker_image_was_built(
    tmp_path: Path, dockerfile: Path
) -> None:
    checks = by_name(run_checks(healthy(tmp_path), FakeEngine, BUILT.replace(day=19), dockerfile))
    assert not checks["clock"].ok and "worker image's build" in checks["clock"].detail


def test_an_api_key_file_must_be_private(tmp_path: Path, dockerfile: Path) -> None:
    key = tmp_path / "secrets.env"
    key.write_text("CODEX_API_KEY=sk-1\n")
    key.chmod(0o644)
    config = healthy(tmp_path).replace(auth_mode="api_key", api_key_file=key)
    check = by_name(run_checks(config, FakeEngine, NOW, dockerfile))["api key"]
    assert not check.ok and "chmod 600" in check.detail and "sk-1" not in check.detail
    key.chmod(0o600)
    assert by_name(run_checks(config, FakeEngine, NOW, dockerfile))["api key"].ok


def test_webhook_secrets_are_checked(tmp_path: Path, dockerfile: Path) -> None:
    secret = tmp_path / "hook.secret"
    secret.write_text("s")
    secret.chmod(0o640)
    target = WebhookTarget("team", "https://h/x", secret)
    config = healthy(tmp_path).replace(notify={"team": target})
    assert not by_name(run_checks(config, FakeEngine, NOW, dockerfile))["notify team"].ok


def test_forge_credential_files_are_checked(tmp_path: Path, dockerfile: Path) -> None:
    token = tmp_path / "github.token"
    token.write_text("github_pat_s3cr3t\n")
    token.chmod(0o644)
    forge = ForgeSettings("github.com", "github", "https://api.github.com", token)
    config = healthy(tmp_path).replace(publish=PublishSettings(forges={"github.com": forge}))
    check = by_name(run_checks(config, FakeEngine, NOW, dockerfile))["publish github.com"]
    assert not check.ok and "chmod 600" in check.detail and "s3cr3t" not in check.detail
    token.chmod(0o600)
    assert by_name(run_checks(config, FakeEngine, NOW, dockerfile))["publish github.com"].ok


@pytest.mark.docker
def test_doctor_on_this_machine_runs_every_check(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "watcherd", "--root", str(tmp_path), "doctor"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    lines = run.stdout.splitlines()
    assert lines[0].startswith("ok    engine ")
    assert run.returncode == (0 if all(line.startswith("ok") for line in lines) else 1)


def test_what_weakens_a_jobs_containment_is_said(tmp_path: Path, dockerfile: Path) -> None:
    config = healthy(tmp_path)
    contained = by_name(run_checks(config, FakeEngine, NOW, dockerfile))
    assert contained["network"].ok and not contained["network"].warning
    opened = config.replace(allow_open_network=True, allow_network_tools=True,
                                       auth_mode="login")  # fmt: skip
    checks = by_name(run_checks(opened, FakeEngine, NOW, dockerfile))
    assert checks["network"].warning and "reaches whatever the host can" in checks["network"].detail
    assert checks["network tools"].warning
    assert "login exposure" not in checks  # a login stays with the daemon: nothing to warn
    lines = format_checks(list(checks.values()))
    assert any(line.startswith("WARN  network ") and "fix:" in line for line in lines)


@needs_loop
def test_whether_the_disk_budget_is_held_or_polled_is_said(
    tmp_path: Path, dockerfile: Path
) -> None:
    config = healthy(tmp_path)
    held = by_name(run_checks(config, FakeEngine, NOW, dockerfile))["disk bound"]
    assert held.ok and not held.warning and "no job can write past it" in held.detail
    unseen = lambda: FakeEngine(sees_mounts=False)  # noqa: E731
    polled = by_name(run_checks(config, unseen, NOW, dockerfile))["disk bound"]
    assert polled.ok and polled.warning
    assert polled.detail.startswith("polled: the Docker Engine does not see what the daemon")
    assert "systemd/disk-bound.conf" in polled.fix
    required = config.replace(disk_bound="require")
    refused = by_name(run_checks(required, unseen, NOW, dockerfile))["disk bound"]
    assert not refused.ok and "the daemon will not start" in refused.detail
    chosen = by_name(run_checks(config.replace(disk_bound="poll"), FakeEngine, NOW, dockerfile))
    assert chosen["disk bound"].warning and "disk_bound: poll" in chosen["disk bound"].detail
    assert not (config.root / "disks").exists() or not list((config.root / "disks").iterdir())
