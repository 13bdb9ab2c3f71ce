"""The config's ``publish:`` section: which forges the daemon may push to and open pull
requests on, with which credential, and the bounds on what it pushes (README "Publishing").

    publish:
      forges:                                   # by host, as in a job's repo_url
        github.com: {type: github, token_file: /etc/watcherd/github.token}   # mode 0600
        ghe.example.com:
          type: github
          api_url: https://ghe.example.com/api/v3
          app_id: 12345                          # a GitHub App instead of a token
          app_key_file: /etc/watcherd/app.pem    # mode 0600
      repos:                                    # defaults per repository, first match wins
        - {match: "https://github.com/acme/*", publish: draft}
      branch_prefix: watcherd/
      max_commits: 100
      max_bytes: 50m
      protected_paths: [.github/workflows/, .gitlab-ci.yml]   # (the default list is longer)

Nothing here is a secret: the credentials stay in their files, which only the daemon reads
(watcherd/publish/credentials.py), when it publishes.
"""

from __future__ import annotations

import fnmatch
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from watcherd.util.units import parse_duration, parse_size

PUBLISH_MODES = ("none", "branch", "draft", "ready")
# The kinds of forge the config may name; watcherd/publish/forge.py registers one
# implementation for each (FORGES), and a test holds the two together.
FORGE_TYPES = ("github",)
DEFAULT_API_URLS = {"github.com": "https://api.github.com"}

# Paths whose change runs code with the repository's secrets as soon as it is pushed
# (CI definitions): a job's commits touching them are refused unless the config allows.
# A trailing "/" means the folder and everything under it; others are fnmatch patterns
# of the whole path. Compared case-insensitively.
DEFAULT_PROTECTED_PATHS = (
    ".github/workflows/",
    ".github/actions/",
    ".gitea/workflows/",
    ".forgejo/workflows/",
    ".gitlab-ci.yml",
    ".gitlab/",
    ".circleci/",
    ".travis.yml",
    ".buildkite/",
    ".drone.yml",
    ".woodpecker.yml",
    ".woodpecker/",
    "azure-pipelines.yml",
    ".azure-pipelines/",
    "bitbucket-pipelines.yml",
    "Jenkinsfile",
    ".jenkins/",
    "appveyor.yml",
    ".appveyor.yml",
    "cloudbuild.yaml",
    "buildspec.yml",
)
# Branches never pushed to, besides the repository's default branch and the job's base.
DEFAULT_PROTECTED_BRANCHES = (
    "main", "master", "trunk", "develop", "gh-pages", "release/*", "releases/*",
)  # fmt: skip

_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})(:[0-9]{1,5})?")
_PREFIX = re.compile(r"([A-Za-z0-9_][A-Za-z0-9._-]*/)*")
_TEMPLATE_FIELDS = ("summary", "prompt", "name", "job_id", "agent", "model", "branch")


@dataclass(frozen=True)
class ForgeSettings:
    """One forge host: its API and the credential the daemon uses there."""

    host: str  # as in repo URLs: github.com, ghe.example.com, 127.0.0.1:8080
    type: str = "github"
    api_url: str = ""  # https://api.github.com; GitHub Enterprise: https://HOST/api/v3
    token_file: Path | None = None  # a fine-grained token (mode 0600)
    app_id: str | None = None  # or a GitHub App: its id, its private key (mode 0600) ...
    app_key_file: Path | None = None
    app_installation_id: int | None = None  # ... and its installation (default: asked)


@dataclass(frozen=True)
class RepoDefaults:
    """Settings for the repositories whose URL matches ``match`` (fnmatch)."""

    match: str
    publish: str | None = None  # a job's publish: when it gives none
    allow_protected_paths: bool = False


@dataclass(frozen=True)
class PublishSettings:
    forges: Mapping[str, ForgeSettings] = field(default_factory=dict)
    repos: tuple[RepoDefaults, ...] = ()
    default: str = "none"  # for jobs that say nothing and match no repos: pattern
    branch_prefix: str = "watcherd/"  # the pushed branch is this + the job's branch name
    max_commits: int = 100
    max_bytes: int = 50 * 1024**2  # the objects a push would send, uncompressed
    protected_paths: tuple[str, ...] = DEFAULT_PROTECTED_PATHS
    allow_protected_paths: bool = False
    protected_branches: tuple[str, ...] = DEFAULT_PROTECTED_BRANCHES
    title: str = "{summary}"  # the pull request's title (fields: see _TEMPLATE_FIELDS)
    job_url: str | None = None  # a link to the job's page: "https://host/jobs/{job_id}"
    retries: int = 3  # a transient failure (network, 5xx) is tried again this often
    timeout: float = 30.0  # one API call
    push_timeout: float = 600.0  # one git push

    def forge_for(self, host: str) -> ForgeSettings | None:
        return self.forges.get(host.lower())

    def repo_defaults(self, url: str) -> RepoDefaults | None:
        for entry in self.repos:
            if fnmatch.fnmatchcase(url, entry.match):
                return entry
        return None

    def mode_for(self, url: str, asked: str | None) -> str:
        """The job's own publish:, else its repository's default, else the default."""
        if asked is not None:
            return asked
        entry = self.repo_defaults(url)
        if entry is not None and entry.publish is not None:
            return entry.publish
        return self.default

    def protected_paths_allowed(self, url: str) -> bool:
        entry = self.repo_defaults(url)
        return self.allow_protected_paths or (entry is not None and entry.allow_protected_paths)


def parse_publish(value: Any) -> PublishSettings:
    """The ``publish:`` mapping, or ValueError naming the key at fault."""
    if value is None:
        return PublishSettings()
    if not isinstance(value, dict):
        raise ValueError("expected a mapping (forges, repos, branch_prefix, ...)")
    known = {
        "forges", "repos", "default", "branch_prefix", "max_commits", "max_bytes",
        "protected_paths", "allow_protected_paths", "protected_branches", "title", "job_url",
        "retries", "timeout", "push_timeout",
    }  # fmt: skip
    unknown = sorted(str(key) for key in value if key not in known)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(known))})"
        )
    values: dict[str, Any] = {}
    for key, raw in value.items():
        try:
            values[key] = _PARSERS[key](raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{key}: {exc}") from None
    return PublishSettings(**values)


def _forges(value: Any) -> dict[str, ForgeSettings]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of hosts (github.com: {type: github, ...})")
    forges = {}
    for host, spec in value.items():
        if not isinstance(host, str) or not _HOST.fullmatch(host):
            raise ValueError(f"{host!r} is not a host name (host or host:port)")
        try:
            forges[host.lower()] = _forge(host.lower(), spec)
        except ValueError as exc:
            raise ValueError(f"{host}: {exc}") from None
    return forges


def _forge(host: str, spec: Any) -> ForgeSettings:
    if not isinstance(spec, dict):
        raise ValueError("expected {type: github, token_file: ...}")
    allowed = {"type", "api_url", "token_file", "app_id", "app_key_file", "app_installation_id"}
    unknown = sorted(str(key) for key in spec if key not in allowed)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )
    kind = spec.get("type", "github")
    if kind not in FORGE_TYPES:
        raise ValueError(f"type: expected one of {', '.join(FORGE_TYPES)}, got {kind!r}")
    api_url = spec.get("api_url") or DEFAULT_API_URLS.get(host) or f"https://{host}/api/v3"
    _check_url(api_url, "api_url")
    token_file = _path(spec.get("token_file"), "token_file")
    key_file = _path(spec.get("app_key_file"), "app_key_file")
    app_id = spec.get("app_id")
    if app_id is not None:
        if (
            isinstance(app_id, bool)
            or not isinstance(app_id, int | str)
            or not str(app_id).isdigit()
        ):
            raise ValueError("app_id: expected the App's numeric id")
        app_id = str(app_id)
    installation = spec.get("app_installation_id")
    if installation is not None and (
        isinstance(installation, bool) or not isinstance(installation, int)
    ):
        raise ValueError("app_installation_id: expected a number")
    if (app_id is None) != (key_file is None):
        raise ValueError("a GitHub App needs both app_id and app_key_file")
    if (token_file is None) == (app_id is None):
        raise ValueError("give one credential: token_file (a token) or app_id and app_key_file")
    return ForgeSettings(host, kind, api_url.rstrip("/"), token_file, app_id, key_file,
                         installation)  # fmt: skip


def _path(value: Any, key: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key}: expected a file path")
    return Path(value).expanduser()


def _check_url(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key}: expected an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{key}: no credentials in the URL; they go in a 0600 file")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value) or parts.query or parts.fragment:
        raise ValueError(f"{key}: no whitespace, query or fragment")
    return value


def _repos(value: Any) -> tuple[RepoDefaults, ...]:
    if not isinstance(value, list):
        raise ValueError("expected a list of {match: PATTERN, publish: MODE}")
    entries = []
    for number, spec in enumerate(value, 1):
        if not isinstance(spec, dict) or not isinstance(spec.get("match"), str):
            raise ValueError(f"entry {number}: expected {{match: PATTERN, publish: MODE}}")
        unknown = sorted(
            str(k) for k in spec if k not in ("match", "publish", "allow_protected_paths")
        )
        if unknown:
            raise ValueError(f"entry {number}: unknown key(s) {', '.join(unknown)}")
        mode = spec.get("publish")
        if mode is not None:
            mode = _mode(mode)
        entries.append(
            RepoDefaults(spec["match"], mode, _bool(spec.get("allow_protected_paths", False)))
        )
    return tuple(entries)


def _mode(value: Any) -> str:
    if value not in PUBLISH_MODES:
        raise ValueError(f"expected one of {', '.join(PUBLISH_MODES)}, got {value!r}")
    return str(value)


def _prefix(value: Any) -> str:
    if not isinstance(value, str) or not _PREFIX.fullmatch(value) or ".." in value:
        raise ValueError("expected '' or folder names ending in '/' (watcherd/)")
    if any(part.endswith(".lock") or part.startswith(".") for part in value.split("/")):
        raise ValueError("no part may start with '.' or end in '.lock'")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number of at least 1, got {value!r}")
    return value


def _retries(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
        raise ValueError(f"expected a whole number from 0 to 10, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of non-empty strings")
    return tuple(value)


def _template(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty template such as '{summary}'")
    for _, name, _, _ in string.Formatter().parse(value):
        if name is not None and name not in _TEMPLATE_FIELDS:
            raise ValueError(f"unknown field {{{name}}} (fields: {', '.join(_TEMPLATE_FIELDS)})")
    return value


def _job_url(value: Any) -> str:
    _check_url(value.replace("{job_id}", "x") if isinstance(value, str) else value, "job_url")
    for _, name, _, _ in string.Formatter().parse(value):
        if name is not None and name != "job_id":
            raise ValueError("the only field is {job_id}")
    return str(value)


def _duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds > 3600:
        raise ValueError("at most an hour")
    return seconds


_PARSERS: dict[str, Any] = {
    "forges": _forges,
    "repos": _repos,
    "default": _mode,
    "branch_prefix": _prefix,
    "max_commits": _positive_int,
    "max_bytes": parse_size,
    "protected_paths": _strings,
    "allow_protected_paths": _bool,
    "protected_branches": _strings,
    "title": _template,
    "job_url": _job_url,
    "retries": _retries,
    "timeout": _duration,
    "push_timeout": _duration,
}
