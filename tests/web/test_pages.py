"""The page's own rules: a session cookie from a token, CSRF and Origin on every change,
nothing an agent wrote rendered as markup, no open redirect after logging in."""

from __future__ import annotations

import json

import requests

from tests.web.conftest import Served
from tests.web.test_api import JOB, finished
from watcherd.spool.folders import Layout


def logged_in(served: Served, scope: str = "admin") -> tuple[requests.Session, str]:
    session = requests.Session()
    form = {"token": served.tokens[scope], "next": "//evil.example/x"}
    answer = session.post(served.base + "/login", data=form, allow_redirects=False, timeout=10)
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/"  # never another host
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = session.get(served.base + "/", timeout=10).text
    csrf = page.split('data-csrf="', 1)[1].split('"', 1)[0]
    return session, csrf


def test_a_login_from_another_origin_is_refused(served: Served) -> None:
    answer = requests.post(served.base + "/login", data={"token": served.tokens["read"]},
                           headers={"Origin": "http://evil.example"}, timeout=10,
                           allow_redirects=False)  # fmt: skip
    assert answer.status_code == 403 and "Set-Cookie" not in answer.headers


def test_a_wrong_token_gets_no_session(served: Served) -> None:
    answer = requests.post(served.base + "/login", data={"token": "wdt_wrong"}, timeout=10,
                           allow_redirects=False)  # fmt: skip
    assert answer.status_code == 401 and "Set-Cookie" not in answer.headers
    page = requests.get(served.base + "/", headers={"Accept": "text/html"}, timeout=10,
                        allow_redirects=False)  # fmt: skip
    assert page.status_code == 303 and page.headers["Location"].startswith("/login")


def test_changes_from_the_page_need_the_csrf_token_and_the_same_origin(served: Served) -> None:
    session, csrf = logged_in(served)
    served.post("/api/v1/jobs?name=target", served.tokens["submit"], data=JOB)
    url = served.base + "/api/v1/jobs/target/cancel"
    same = {"Origin": served.base}
    assert session.post(url, headers=same, timeout=10).status_code == 403  # no CSRF token
    cross = {"Origin": "http://evil.example", "X-CSRF-Token": csrf}
    refused = session.post(url, headers=cross, timeout=10)
    assert refused.status_code == 403 and "cross-origin" in refused.json()["error"]
    no_origin = session.post(url, headers={"X-CSRF-Token": csrf}, timeout=10)
    assert no_origin.status_code == 403
    assert not list((served.config.root / "cancel").glob("*"))  # nothing was asked
    done = session.post(url, headers={**same, "X-CSRF-Token": csrf}, timeout=10)
    assert done.status_code == 202
    # A form post carries it as a field.
    served.post("/api/v1/jobs?name=second", served.tokens["submit"], data=JOB)
    form = session.post(served.base + "/jobs/second/cancel", data={"csrf": csrf},
                        headers=same, allow_redirects=False, timeout=10)  # fmt: skip
    assert form.status_code == 303
    # A read-only session cannot cancel at all.
    reader, reader_csrf = logged_in(served, "read")
    denied = reader.post(url, headers={**same, "X-CSRF-Token": reader_csrf}, timeout=10)
    assert denied.status_code == 403 and "admin" in denied.json()["error"]


def test_what_an_agent_wrote_is_text_on_every_page(served: Served) -> None:
    job_id = "20261207T050000Z-xss-eeeeee"
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    finished(served, job_id, "<img src=x onerror=alert(3)>.yaml", "failed", reason=evil)
    out = Layout(served.config.root).out_dir(job_id)
    (out / "summary.md").write_text(f"# {evil}")
    (out / "changes.patch").write_text(f"+{evil}\n")
    session, _ = logged_in(served)
    for path in ("/", "/ui/jobs", f"/jobs/{job_id}"):
        page = session.get(served.base + path, timeout=10)
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "<img src=x onerror=alert(3)>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        if path != "/ui/jobs":
            assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    raw = session.get(served.base + f"/api/v1/jobs/{job_id}/files/summary.md", timeout=10)
    assert raw.headers["Content-Type"].startswith("text/markdown")
    assert "sandbox" in raw.headers["Content-Security-Policy"]
    assert json.loads(session.get(served.base + f"/api/v1/jobs/{job_id}", timeout=10).text)[
        "reason"] == evil  # JSON carries it as it is: it is data  # fmt: skip
