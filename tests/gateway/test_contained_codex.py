"""The gateway and the egress proxy from inside a real job: the real worker image, the real
Codex, a scripted model whose tool calls are the attacks."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.attacks import attack_targets
from tests.support.backends import on_both_backends
from tests.support.git_server import GitServer
from tests.support.helpers import DaemonProcess, files_holding, wait_finished, write_job
from tests.support.model_server import ScriptedModel, Step, codex_config
from watcherd.config import DEFAULT_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.codex]
# The attack searches every mount: on a busy machine longer than the 5 s after which Codex
# hands a command's output so far to the model (which then ends the turn, and the command).
LONG_COMMAND = {"yield_time_ms": 30000}

EGRESS = {"registry": {"hosts": ["pypi.test", "meta.test", "lan.test", "home.test"],
                       "ports": [443]}}  # fmt: skip
PINNED = {"pypi.test": ["127.0.0.1"], "meta.test": ["169.254.169.254"],
          "lan.test": ["10.0.0.1"], "home.test": ["::1"]}  # fmt: skip
TARGETS = [
    "evil.test:443",  # on no list
    "pypi.test:22",  # a port the list does not name
    "127.0.0.1:443",
    "[::1]:443",
    "2130706433:443",  # raw addresses
    "pypi.test:443",
    "meta.test:443",
    "lan.test:443",
    "home.test:443",  # resolve inward
]


@on_both_backends
def test_egress_by_name_refuses_every_way_inward_and_logs_it(
    work_root: Path, codex_daemon: Callable[..., DaemonProcess], model: ScriptedModel,
    git_server: GitServer,
) -> None:  # fmt: skip
    connect = (
        "for t in " + " ".join(TARGETS) + "; do "
        "{ exec 3<>/dev/tcp/127.0.0.1/48081 && printf 'CONNECT %s HTTP/1.1\\r\\n\\r\\n' $t >&3 "
        "&& head -n 1 <&3 | tr -d '\\r' | sed \"s|^|$t |\"; exec 3<&-; } >> /work/out/egress.txt;"
        " done; env | grep -i '^https_proxy=' > /work/out/proxy.txt; true"
    )
    model.steps += [Step("tool", connect), Step("message", "done")]
    codex_daemon(egress=EGRESS, egress_hosts=PINNED)
    write_job(work_root / "inbox", "egress.yaml", repo_url=git_server.url("demo.git"),
              prompt="get out", network=["registry"], retries=0)  # fmt: skip
    folder, path = wait_finished(work_root, "egress.yaml", timeout=120)
    out = work_root / "out" / path.name.removesuffix(".yaml")
    assert folder == "done", (out / "run.log").read_text()
    answers = dict(line.split(" ", 1) for line in (out / "egress.txt").read_text().splitlines())
    assert set(answers) == set(TARGETS), answers
    assert all(" 403 " in f" {answer} " for answer in answers.values()), answers
    assert (out / "proxy.txt").read_text().strip().endswith("127.0.0.1:48081")
    audit = [json.loads(line) for line in (out / "model-calls.jsonl").read_text().splitlines()]
    denied = {r["target"]: r["reason"] for r in audit if r["kind"] == "egress"}
    assert set(denied) >= {"evil.test:443", "pypi.test:22", "meta.test:443", "lan.test:443"}
    assert all(r["decision"] == "deny" for r in audit if r["kind"] == "egress")
    assert "169.254" in denied["meta.test:443"] or "link-local" in denied["meta.test:443"]


@on_both_backends
def test_codex_finds_no_key_and_reaches_nothing_but_its_model(
    work_root: Path, start_daemon: Callable[..., DaemonProcess], model: ScriptedModel,
    git_server: GitServer, docker_client: docker.DockerClient, tmp_path: Path, backend: str,
) -> None:  # fmt: skip
    key = "sk-CANARY-" + secrets.token_hex(12)
    key_file = tmp_path / "codex.env"
    key_file.write_text(f"CODEX_API_KEY={key}\n")
    key_file.chmod(0o600)
    config_dir = work_root / ".codex-bot"
    config_dir.mkdir(mode=0o700)
    (config_dir / "config.toml").write_text(
        codex_config(model.base_url).replace('"SCRIPTED_API_KEY"', '"CODEX_API_KEY"')
    )
    with attack_targets(docker_client) as targets:
        model.steps += [Step("tool", targets.script(key), LONG_COMMAND), Step("message", "done")]
        start_daemon(image=DEFAULT_IMAGE, auth_mode="api_key",
                     api_key_file=str(key_file), allowed_protocols=["git"],
                     default_timeout=120)  # fmt: skip
        write_job(work_root / "inbox", "contained.yaml", repo_url=git_server.url("demo.git"),
                  prompt="escape", retries=0)  # fmt: skip
        folder, path = wait_finished(work_root, "contained.yaml", timeout=120)
        out = work_root / "out" / path.name.removesuffix(".yaml")
        assert folder == "done", (out / "run.log").read_text()
        targets.check(out, key, backend)
    assert files_holding(work_root, key.encode()) == []
    assert model.authorizations and set(model.authorizations) == {f"Bearer {key}"}


def chatgpt_login(access: str, refresh: str) -> dict[str, Any]:
    """An auth.json as `codex login` writes one for a ChatGPT account, fresh."""
    claims = {"email": "operator@example.invalid", "sub": "user-canary",
              "https://api.openai.com/auth": {"chatgpt_plan_type": "pro",
                                              "chatgpt_account_id": "acct-canary"}}  # fmt: skip
    id_token = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in ({"alg": "RS256", "typ": "JWT"}, claims)
    ) + ".c2lnbmF0dXJl"  # fmt: skip
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"OPENAI_API_KEY": None, "last_refresh": now,
            "tokens": {"id_token": id_token, "access_token": access, "refresh_token": refresh,
                       "account_id": "acct-canary"}}  # fmt: skip


@on_both_backends
def test_a_chatgpt_login_stays_with_the_daemon_and_codex_works_on_a_stand_in(
    work_root: Path, start_daemon: Callable[..., DaemonProcess], model: ScriptedModel,
    git_server: GitServer, docker_client: docker.DockerClient, backend: str,
) -> None:  # fmt: skip
    """Codex in its default auth mode, a ChatGPT login: the real Codex runs on the job's
    stand-in login, every call reaches the upstream with the login's own access token, and
    neither that token nor the refresh token is anywhere the agent can look."""
    access = "at-CANARY-" + secrets.token_hex(12)
    refresh = "rt-CANARY-" + secrets.token_hex(12)
    login = work_root / ".codex-bot"
    login.mkdir(mode=0o700)
    (login / "auth.json").write_text(json.dumps(chatgpt_login(access, refresh)))
    (login / "auth.json").chmod(0o600)
    (login / "config.toml").write_text('model = "scripted-model"\n')
    with attack_targets(docker_client) as targets:
        look = '; cat "$CODEX_HOME/auth.json" > /work/out/stand-in.json'
        attack = Step("tool", targets.script(access) + look, LONG_COMMAND)
        model.steps += [attack, Step("message", "done")]
        start_daemon(image=DEFAULT_IMAGE, auth_mode="login", allowed_protocols=["git"],
                     agents={"codex": {"env": {"OPENAI_BASE_URL": model.base_url}}},
                     default_timeout=120)  # fmt: skip
        write_job(work_root / "inbox", "login.yaml", repo_url=git_server.url("demo.git"),
                  prompt="take the login", retries=0)  # fmt: skip
        folder, path = wait_finished(work_root, "login.yaml", timeout=120)
        out = work_root / "out" / path.name.removesuffix(".yaml")
        assert folder == "done", (out / "run.log").read_text()
        targets.check(out, access, backend)
    assert refresh not in (out / "procs.txt").read_text(errors="replace")
    stand_in = json.loads((out / "stand-in.json").read_text())["tokens"]
    assert stand_in["refresh_token"] == "held-by-watcherd"
    assert stand_in["access_token"].startswith("wdj-") and stand_in["account_id"] == "acct-canary"
    for secret in (access, refresh):  # only the login dir holds them
        assert files_holding(work_root, secret.encode()) == [login / "auth.json"]
    assert len(model.authorizations) == 2 and set(model.authorizations) == {f"Bearer {access}"}
