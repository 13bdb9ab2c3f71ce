"""Repository URLs from job files: which are allowed, and how to show them.

A job file may come from another program that is wrong or compromised, and git
treats some URLs as commands (``ext::``) or options (``--upload-pack=...``).
Everything here is a pure function so that the rules are easy to read and test.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PROTOCOLS = ("https", "ssh")
# Transports that can run commands or read the host: never allowed, whatever the config says.
NEVER_PROTOCOLS = ("ext", "fd")
KNOWN_PROTOCOLS = ("https", "ssh", "http", "git", "file")

_SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+)@(?P<host>[A-Za-z0-9.-]+):(?P<path>[^:].*)$")
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


class RepoUrlError(ValueError):
    """The URL is refused; the message says why."""


def redact(text: str) -> str:
    """``https://user:token@host/x`` → ``https://***@host/x``, anywhere in a text."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


def check_repo_url(url: str, allowed: Sequence[str], protocols: Sequence[str]) -> str:
    """The URL as git will see it, or RepoUrlError naming the problem."""
    if not url:
        raise RepoUrlError("is empty")
    if url.startswith("-"):
        raise RepoUrlError("starts with '-', which git would read as an option")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise RepoUrlError("contains whitespace or control characters")
    if "::" in url.split("/", 1)[0]:
        raise RepoUrlError(f"uses a git remote helper ({url.split('::', 1)[0]}::), never allowed")
    server = _server(url)
    if server is not None and any(part.startswith("-") for part in re.split("[@:]", server)):
        raise RepoUrlError(
            f"its host, user or port starts with '-', which ssh would read as an option: {server!r}"
        )
    protocol = url_protocol(url)
    if protocol not in protocols or protocol in NEVER_PROTOCOLS:
        if protocol == "file":
            raise RepoUrlError("local repositories (file:// or a path) are disabled in the config")
        choices = ", ".join(protocols)
        raise RepoUrlError(f"protocol {protocol!r} is not allowed (allowed: {choices})")
    if has_credentials(url):
        raise RepoUrlError(
            "contains credentials; put them in the daemon's config, not in job files"
        )
    if not any(fnmatch.fnmatchcase(url, pattern) for pattern in allowed):
        raise RepoUrlError("is not in allowed_repos")
    return url


def _server(url: str) -> str | None:
    """``user@host:port`` of a URL (``user@host`` of an scp-like one), None for a path."""
    if "://" in url:
        return url.split("://", 1)[1].split("/", 1)[0]
    match = re.match(r"^([^/:]*@)?[^/:]*(?=:)", url)
    return match.group(0) if match and not url.startswith("/") else None


def url_protocol(url: str) -> str:
    """``https``, ``ssh``, ``file``, ... of a URL, scp-like ``git@host:path`` being ssh
    and a plain path being file."""
    if "://" in url:
        return url.split("://", 1)[0].lower()
    if _SCP_LIKE.match(url):
        return "ssh"
    if url.startswith(("/", "./", "../")):
        return "file"
    if ":" in url:
        return url.split(":", 1)[0].lower()
    return "file"


def has_credentials(url: str) -> bool:
    """A password or token in the URL. A bare ssh user (``git@``) is not a secret."""
    if "://" not in url:
        return False
    parts = urlsplit(url)
    if parts.password is not None:
        return True
    return parts.username is not None and parts.scheme.lower() != "ssh"


def repo_name(url: str) -> str:
    """The default clone folder: the URL's last path segment without ``.git``."""
    match = _SCP_LIKE.match(url)
    path = match.group("path") if match else urlsplit(url).path if "://" in url else url
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.removesuffix(".git")


def is_safe_segment(name: str) -> bool:
    """One path segment of ``[A-Za-z0-9._-]``, not ``.``/``..``, not starting with ``-``/``.``."""
    return bool(_SAFE_SEGMENT.fullmatch(name)) and len(name) <= 100


def without_credentials(url: str) -> str:
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def repo_host(url: str) -> str | None:
    """``host`` or ``host:port`` (lowercase) of a network URL, scp-like ``git@host:path``
    included; None for a local path or a URL without a host."""
    match = _SCP_LIKE.match(url)
    if match and "://" not in url:
        return match.group("host").lower()
    if "://" not in url:
        return None
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname.lower()
    if port is not None and parts.scheme.lower() in ("http", "https"):
        return f"{host}:{port}"
    return host


def repo_path(url: str) -> str:
    """The path of a network URL without its leading ``/``, a trailing ``/`` or ``.git``:
    ``https://github.com/acme/widgets.git`` → ``acme/widgets``."""
    match = _SCP_LIKE.match(url)
    path = match.group("path") if match and "://" not in url else urlsplit(url).path
    return path.strip("/").removesuffix(".git").strip("/")
