"""publish: in the config (forges, credentials by file, defaults per repository, bounds),
and a job's publish: and branch: keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcherd.config import Config, ConfigError, load_config
from watcherd.config.publish import DEFAULT_PROTECTED_PATHS, ForgeSettings, RepoDefaults
from watcherd.daemon.reload import RELOADABLE
from watcherd.job.spec import InvalidJob, parse_job
from watcherd.repo.url import repo_host, repo_path

FORGES = """
publish:
  forges:
    github.com: {token_file: /etc/watcherd/github.token}
    GHE.example.com:
      type: github
      api_url: https://ghe.example.com/api/v3
      app_id: 12345
      app_key_file: /etc/watcherd/app.pem
  repos:
    - {match: "https://github.com/acme/*", publish: draft}
    - {match: "https://ghe.example.com/*", allow_protected_paths: true}
  branch_prefix: bots/watcherd/
  max_bytes: 10m
"""


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path, environ={})


def test_forges_defaults_and_bounds(tmp_path: Path) -> None:
    settings = load(tmp_path, FORGES).publish
    assert settings.forges["github.com"] == ForgeSettings(
        "github.com", "github", "https://api.github.com", Path("/etc/watcherd/github.token")
    )
    ghe = settings.forges["ghe.example.com"]
    assert (ghe.app_id, ghe.app_key_file, ghe.token_file) == (
        "12345", Path("/etc/watcherd/app.pem"), None)  # fmt: skip
    assert settings.repos[0] == RepoDefaults("https://github.com/acme/*", "draft")
    assert settings.branch_prefix == "bots/watcherd/" and settings.max_bytes == 10 * 1024**2
    assert settings.protected_paths == DEFAULT_PROTECTED_PATHS
    assert ".github/workflows/" in DEFAULT_PROTECTED_PATHS
    # Per repository: its default, else the config's default (none).
    assert settings.mode_for("https://github.com/acme/widgets", None) == "draft"
    assert settings.mode_for("https://github.com/acme/widgets", "ready") == "ready"
    assert settings.mode_for("https://github.com/other/x", None) == "none"
    assert settings.protected_paths_allowed("https://ghe.example.com/a/b")
    assert not settings.protected_paths_allowed("https://github.com/acme/widgets")
    assert "publish" in RELOADABLE


def test_no_publish_section_publishes_nothing(tmp_path: Path) -> None:
    settings = load(tmp_path, "concurrency: 1\n").publish
    assert settings.forges == {} and settings.default == "none"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("publish: {forges: {github.com: {}}}", "give one credential"),
        (
            "publish: {forges: {github.com: {token_file: /t, app_id: 1, app_key_file: /k}}}",
            "give one credential",
        ),
        ("publish: {forges: {github.com: {app_id: 1}}}", "needs both app_id and app_key_file"),
        ("publish: {forges: {github.com: {type: gitlab, token_file: /t}}}", "type: expected"),
        ("publish: {forges: {github.com: {token: abc}}}", "unknown key(s) token"),
        ("publish: {forges: {'x y': {token_file: /t}}}", "not a host name"),
        (
            "publish: {forges: {h: {token_file: /t, api_url: 'https://u:p@h/api'}}}",
            "no credentials in the URL",
        ),
        ("publish: {default: always}", "default: expected one of none, branch, draft, ready"),
        ("publish: {branch_prefix: ../x/}", "branch_prefix"),
        ("publish: {branch_prefix: watcherd}", "branch_prefix"),
        ("publish: {max_commits: 0}", "max_commits"),
        ("publish: {title: '{secret}'}", "unknown field {secret}"),
        ("publish: {job_url: 'https://dash/{token}'}", "the only field is {job_id}"),
        ("publish: {repos: [{match: x, publish: maybe}]}", "repos: expected one of"),
        ("publish: {push: yes}", "unknown key(s) push"),
    ],
)
def test_bad_publish_settings_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert "publish" in str(caught.value) and expected in str(caught.value)


def test_repo_hosts_and_paths() -> None:
    assert repo_host("https://GitHub.com/acme/widgets.git") == "github.com"
    assert repo_host("http://127.0.0.1:8080/acme/widgets.git") == "127.0.0.1:8080"
    assert repo_host("git@github.com:acme/widgets.git") == "github.com"
    assert repo_host("ssh://git@github.com:22/acme/widgets.git") == "github.com"
    assert repo_host("file:///srv/widgets.git") is None
    assert repo_path("https://github.com/acme/widgets.git/") == "acme/widgets"
    assert repo_path("git@github.com:acme/widgets.git") == "acme/widgets"


def job(text: str, config: Config) -> object:
    return parse_job(text.encode(), config)


def test_a_jobs_publish_key(tmp_path: Path) -> None:
    config = load(tmp_path, FORGES)
    base = "repo_url: https://github.com/acme/widgets.git\nprompt: fix\n"
    assert parse_job(f"{base}publish: ready\n".encode(), config).publish == "ready"
    assert parse_job(base.encode(), config).publish is None  # the repository's default
    with pytest.raises(InvalidJob, match="publish: expected one of none, branch, draft, ready"):
        job(f"{base}publish: yes\n", config)
    # Nothing configured for the job's host: said when the job is read, not after its work.
    other = "repo_url: https://gitlab.example/acme/widgets.git\nprompt: fix\n"
    with pytest.raises(InvalidJob, match=r"publish: draft needs a forge for gitlab.example"):
        job(f"{other}publish: draft\n", config)
    assert parse_job(f"{other}publish: none\n".encode(), config).publish == "none"
    assert parse_job(other.encode(), config).publish is None  # its default is none
