"""Attacks on ``serve`` from outside (a network path to the port) and from the shared
folder, each against a real server on a loopback port, with real files."""

from __future__ import annotations

import requests

from tests.web.conftest import Served
from tests.web.test_pages import logged_in
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
