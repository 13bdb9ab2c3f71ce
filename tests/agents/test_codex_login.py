"""Codex's ChatGPT login kept by the daemon: the job's stand-in holds nothing secret, and
the daemon renews the login against its token endpoint, once, under a lock."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.token_endpoint import TokenEndpoint
from watcherd.agents.base import LoginError
from watcherd.agents.codex_login import (
    CLIENT_ID,
    HELD,
    RENEW_AFTER,
    TOKEN_URL_ENV,
    read_login,
    renew,
    stand_in,
)

ACCESS = "canary-access-7f3a"
REFRESH = "canary-refresh-9c1d"
SIGNATURE = "canary-signature-2b8e"
EMAIL = "canary-operator@example.invalid"


def jwt(claims: dict[str, object], signature: str = SIGNATURE) -> str:
    parts = [{"alg": "RS256"}, claims]
    encoded = [base64.urlsafe_b64encode(json.dumps(p).encode()).decode().rstrip("=") for p in parts]
    return ".".join([*encoded, signature])


def login_file(age: float = 0.0, access: str = ACCESS, exp: float | None = None) -> bytes:
    claims = {"email": EMAIL, "sub": "user-1",
              "https://api.openai.com/auth": {"chatgpt_plan_type": "pro",
                                              "chatgpt_account_id": "acct-1"}}  # fmt: skip
    if exp is not None:
        access = jwt({"exp": exp, "secret": access})
    stamp = datetime.fromtimestamp(time.time() - age, UTC).isoformat().replace("+00:00", "Z")
    record = {"OPENAI_API_KEY": None, "last_refresh": stamp,
              "tokens": {"id_token": jwt(claims), "access_token": access,
                         "refresh_token": REFRESH, "account_id": "acct-1"}}  # fmt: skip
    return json.dumps(record).encode()


@pytest.fixture
def endpoint() -> Iterator[TokenEndpoint]:
    server = TokenEndpoint([]).start()
    yield server
    server.stop()


def login_dir(tmp_path: Path, data: bytes) -> Path:
    folder = tmp_path / "login"
    folder.mkdir(mode=0o700)
    (folder / "auth.json").write_bytes(data)
    (folder / "auth.json").chmod(0o600)
    return folder


def test_the_stand_in_keeps_the_account_and_no_secret() -> None:
    login = read_login(login_file())
    assert login is not None and login.access_token == ACCESS
    data = stand_in(login, "wdj-job-token")
    for secret in (ACCESS, REFRESH, SIGNATURE, EMAIL, "user-1"):
        assert secret.encode() not in data
    record = json.loads(data)
    tokens = record["tokens"]
    assert (tokens["access_token"], tokens["refresh_token"]) == ("wdj-job-token", HELD)
    assert tokens["account_id"] == "acct-1" and record["OPENAI_API_KEY"] is None
    header, payload, signature = tokens["id_token"].split(".")  # Codex parses a JWT
    assert header and signature
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims == {"https://api.openai.com/auth": {"chatgpt_plan_type": "pro",
                                                      "chatgpt_account_id": "acct-1"}}  # fmt: skip
    # Fresh: Codex renews a login only when its last_refresh is 8 days old (or on a 401).
    assert abs(datetime.fromisoformat(record["last_refresh"]).timestamp() - time.time()) < 60


def test_what_is_read_of_a_login_file() -> None:
    assert read_login(b"not json") is None
    assert read_login(b"[]") is None
    assert read_login(json.dumps({"tokens": None}).encode()) is None
    keyed = read_login(json.dumps({"OPENAI_API_KEY": "sk-op", "tokens": None}).encode())
    assert keyed is not None and (keyed.api_key, keyed.access_token) == ("sk-op", None)
    assert ACCESS not in repr(read_login(login_file()))


def test_when_a_login_is_renewed() -> None:
    now = time.time()
    fresh = read_login(login_file(age=3600))
    assert fresh is not None and not fresh.due(now, 3600)
    assert read_login(login_file(age=RENEW_AFTER + 60)).due(now, 3600)  # type: ignore[union-attr]
    expiring = read_login(login_file(age=3600, exp=now + 1800))
    assert expiring is not None and expiring.due(now, 3600)  # the job would outlive it
    assert not expiring.due(now, 60)


def test_a_stale_login_is_renewed_once_and_written_back_whole(
    tmp_path: Path, endpoint: TokenEndpoint
) -> None:
    folder = login_dir(tmp_path, login_file(age=RENEW_AFTER + 60))
    endpoint.answers.append((200, {"access_token": "new-access", "refresh_token": "new-refresh"}))
    env = {TOKEN_URL_ENV: endpoint.url}
    assert renew(folder, env, 3600) is True
    sent = {"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": REFRESH,
            "scope": "openid profile email"}  # fmt: skip
    assert endpoint.requests == [sent]
    record = json.loads((folder / "auth.json").read_text())
    assert record["tokens"]["access_token"] == "new-access"
    assert record["tokens"]["refresh_token"] == "new-refresh"
    assert record["tokens"]["account_id"] == "acct-1"  # the rest is kept
    assert (folder / "auth.json").stat().st_mode & 0o777 == 0o600
    assert renew(folder, env, 3600) is False  # fresh now: nothing is sent
    assert len(endpoint.requests) == 1


def test_two_renewals_at_once_spend_the_refresh_token_once(
    tmp_path: Path, endpoint: TokenEndpoint
) -> None:
    folder = login_dir(tmp_path, login_file(age=RENEW_AFTER + 60))
    endpoint.answers += [(200, {"access_token": "a2", "refresh_token": "r2"})] * 4
    results: list[bool] = []
    env = {TOKEN_URL_ENV: endpoint.url}
    threads = [
        threading.Thread(target=lambda: results.append(renew(folder, env, 60))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False, False, False, True]
    assert len(endpoint.requests) == 1


def test_a_refused_renewal_names_the_cause_and_leaves_the_login(
    tmp_path: Path, endpoint: TokenEndpoint
) -> None:
    data = login_file(age=RENEW_AFTER + 60)
    folder = login_dir(tmp_path, data)
    endpoint.answers.append((401, {"error": {"code": "refresh_token_reused"}}))
    with pytest.raises(LoginError) as caught:
        renew(folder, {TOKEN_URL_ENV: endpoint.url}, 60)
    assert not caught.value.transient
    assert "refresh_token_reused" in str(caught.value) and "watcherd login" in str(caught.value)
    assert REFRESH not in str(caught.value)
    assert (folder / "auth.json").read_bytes() == data


def test_an_unreachable_endpoint_is_transient_unless_the_token_still_serves(
    tmp_path: Path, endpoint: TokenEndpoint
) -> None:
    url = endpoint.url
    endpoint.stop()  # nothing listens there now
    serving = login_dir(tmp_path, login_file(age=RENEW_AFTER + 60))
    assert renew(serving, {TOKEN_URL_ENV: url}, 60) is False  # logged; the job runs
    too_old = tmp_path / "old"
    too_old.mkdir()
    (too_old / "auth.json").write_bytes(login_file(age=RENEW_AFTER + 3 * 86400))
    with pytest.raises(LoginError) as caught:
        renew(too_old, {TOKEN_URL_ENV: url}, 60)
    assert caught.value.transient


def test_an_api_key_login_needs_no_renewal(tmp_path: Path, endpoint: TokenEndpoint) -> None:
    folder = login_dir(tmp_path, json.dumps({"OPENAI_API_KEY": "sk-op"}).encode())
    assert renew(folder, {TOKEN_URL_ENV: endpoint.url}, 60) is False
    assert endpoint.requests == []
