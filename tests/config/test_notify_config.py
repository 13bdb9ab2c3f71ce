"""notify: targets in the config, and a job's notify: naming them (never a URL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcherd.config import ConfigError, load_config
from watcherd.config.notify import CommandTarget, WebhookTarget
from watcherd.daemon.reload import RELOADABLE
from watcherd.job.spec import InvalidJob, parse_job

TARGETS = """
notify:
  team: {url: "https://hooks.example/w/T0K3N", secret_file: /etc/watcherd/hook.secret}
  pager: {command: [/usr/local/bin/page-me, --quiet], timeout: 5s}
notify_default: [team]
"""


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path, environ={})


def test_targets_are_typed_and_defaults_checked(tmp_path: Path) -> None:
    config = load(tmp_path, TARGETS)
    assert config.notify == {
        "team": WebhookTarget("team", "https://hooks.example/w/T0K3N",
                              Path("/etc/watcherd/hook.secret"), 10.0),
        "pager": CommandTarget("pager", ("/usr/local/bin/page-me", "--quiet"), 5.0),
    }  # fmt: skip
    assert config.notify_default == ("team",)
    assert {"notify", "notify_default"} <= RELOADABLE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("notify: [a]\n", "setting 'notify': expected a mapping"),
        ("notify: {'bad name': {command: [x]}}\n", "target name 'bad name'"),
        ("notify: {a: {url: 'ftp://h/x', secret_file: /s}}\n", "target 'a': url: expected an http"),
        ("notify: {a: {url: 'https://u:p@h/x', secret_file: /s}}\n", "no credentials in the URL"),
        ("notify: {a: {url: 'https://h/x'}}\n", "target 'a': secret_file: required"),
        ("notify: {a: {url: 'https://h/x', command: [x], secret_file: /s}}\n", "exactly one of"),
        ("notify: {a: {command: []}}\n", "command: expected a non-empty list"),
        ("notify: {a: {command: 'rm -rf /'}}\n", "command: expected a non-empty list"),
        ("notify: {a: {command: [x], timeout: 0}}\n", "timeout: must be more than zero"),
        ("notify: {a: {command: [x], timeout: 2h}}\n", "timeout: at most 600s"),
        ("notify: {a: {command: [x], shell: true}}\n", "unknown key(s) shell"),
        ("notify_default: [nobody]\n", "notify_default: no target named 'nobody'"),
    ],
)
def test_bad_targets_are_refused_naming_them(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert expected in str(caught.value)


def test_a_job_names_configured_targets_only(tmp_path: Path) -> None:
    config = load(tmp_path, TARGETS)
    job = b"repo_url: https://h/a/b\nprompt: p\n"
    assert parse_job(job + b"notify: [pager, team, pager]\n", config).notify == ("pager", "team")
    assert parse_job(job + b"notify: pager\n", config).notify == ("pager",)
    with pytest.raises(InvalidJob) as caught:
        parse_job(job + b"notify: [pager, team-slack]\n", config)
    assert "notify: no notify target named 'team-slack' in the daemon's config" in str(caught.value)
    assert "(targets: pager, team)" in str(caught.value)
    for url in (b"notify: [https://evil.example/x]\n", b"notify: {url: https://evil/x}\n"):
        with pytest.raises(InvalidJob):
            parse_job(job + url, config)
