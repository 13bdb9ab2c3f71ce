"""The dashboard in a real browser (Debian's Chromium through chromedriver), against a real
daemon and a real ``watcherd serve`` process: log in, submit, watch the live progress,
cancel another job; nothing an agent wrote runs as script. A screenshot is kept."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helpers import CHECKOUT, StartDaemon, cli_environ, wait_for, write_job

pytestmark = [pytest.mark.docker, pytest.mark.slow]
ARTIFACTS = Path(os.environ.get("WATCHERD_TEST_ARTIFACTS", CHECKOUT / "artifacts"))


def chromium() -> Any:
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        message = "needs Debian's chromium and chromium-driver (apt)"
        if os.environ.get("CI"):
            pytest.fail(message)  # .ci/run installs them
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                 "--disable-dev-shm-usage"):  # fmt: skip
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    return webdriver.Chrome(options=options, service=service)


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = chromium()
    yield driver
    driver.quit()


def serve(config_path: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with log.open("ab") as out:
        command = [sys.executable, "-m", "watcherd", "--config", str(config_path), "serve"]
        process = subprocess.Popen(
            [*command, "--port", "0"], stdout=out, stderr=out, env=cli_environ()
        )

    def url() -> str | None:
        found = re.search(r"on (http://127\.0\.0\.1:\d+)/", log.read_text())
        return found.group(1) if found else None

    return process, wait_for(url, 30, "serve listening")


def test_log_in_submit_watch_and_cancel(
    work_root: Path, start_daemon: StartDaemon, repo_url: str, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    daemon = start_daemon()
    made = subprocess.run(
        [sys.executable, "-m", "watcherd", "--config", str(daemon.config_path), "token", "add",
         "operator", "--scope", "read", "--scope", "submit", "--scope", "admin"],
        capture_output=True, text=True, env=cli_environ(), check=True,
    )  # fmt: skip
    token = made.stdout.strip()
    process, base = serve(daemon.config_path, work_root.parent / "serve.log")
    try:
        browser.get(base + "/")  # not logged in: to the login page
        wait_for(lambda: "/login" in browser.current_url, 10, "the login page")
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.ID, "login").click()
        wait_for(lambda: browser.find_elements(By.ID, "live-list"), 10, "the job list")
        assert browser.get_cookie("watcherd_session")["httpOnly"] is True

        # Submit through the page; the job's page shows its progress as it happens.
        browser.find_element(By.CSS_SELECTOR, "details.submit summary").click()
        browser.find_element(By.NAME, "name").clear()
        browser.find_element(By.NAME, "name").send_keys("from-browser")
        job = yaml.safe_dump({"repo_url": repo_url, "prompt": "chatter 4"})
        browser.find_element(By.NAME, "job").send_keys(job)
        browser.find_element(By.CSS_SELECTOR, "details.submit button").click()
        wait_for(lambda: "/jobs/from-browser" in browser.current_url, 10, "the job's page")
        progress = browser.find_element(By.ID, "progress")
        wait_for(lambda: "echo <b>bold</b>" in progress.text, 30, "live progress in the page")
        wait_for(lambda: "all good" in browser.find_element(By.ID, "progress").text, 30,
                 "the agent's message")  # fmt: skip
        assert browser.execute_script("return window.__xss") is None  # shown, never run
        assert not browser.find_elements(By.CSS_SELECTOR, "#progress img, #progress b")

        # Another job, running; cancelled from its page.
        write_job(work_root / "inbox", "to-cancel.yaml", repo_url=repo_url,
                  prompt="work-then-hang")  # fmt: skip
        browser.get(base + "/jobs/to-cancel")
        wait_for(lambda: _reload_state(browser) == "running", 30, "to-cancel running")
        browser.find_element(By.ID, "cancel").click()
        wait_for(lambda: _reload_state(browser) == "cancelled", 60, "to-cancel cancelled")
        assert "token operator (page)" in browser.page_source

        # The first job ended: its summary is text, and the list shows both.
        browser.get(base + "/jobs/from-browser")
        wait_for(lambda: _reload_state(browser) == "done", 60, "from-browser done")
        assert "<script>window.__xss=2</script>" in browser.find_element(
            By.CSS_SELECTOR, "pre.summary").text  # fmt: skip
        assert browser.execute_script("return window.__xss") is None
        browser.get(base + "/")
        rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr"),
                        10, "the job list")  # fmt: skip
        assert len(rows) == 2
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        process.terminate()
        assert process.wait(10) == 0


def _state(browser: Any) -> str:
    from selenium.webdriver.common.by import By

    found = browser.find_elements(By.CSS_SELECTOR, "table.facts .state")
    return str(found[0].text) if found else ""


def _reload_state(browser: Any) -> str:
    browser.refresh()
    return _state(browser)
