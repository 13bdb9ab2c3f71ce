"""The config's ``notify:`` targets: named webhooks and commands, checked when the config
loads. A job names targets (``notify: [team]``), never a URL or a command: no job file can
make the daemon call anything the operator did not configure.

    notify:
      team:   {url: https://hooks.example/watcherd, secret_file: /etc/watcherd/hook.secret}
      pager:  {command: [/usr/local/bin/page-me, --quiet], timeout: 30s}
    notify_default: [team]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from watcherd.util.units import parse_duration

TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
WEBHOOK_TIMEOUT = 10.0  # one POST; the retries come on top
COMMAND_TIMEOUT = 30.0
MAX_TIMEOUT = 600.0


@dataclass(frozen=True)
class WebhookTarget:
    """POST the exit record as JSON, signed with HMAC-SHA256 by the secret in the file."""

    name: str
    url: str  # may hold a token in its path: never logged
    secret_file: Path
    timeout: float = WEBHOOK_TIMEOUT


@dataclass(frozen=True)
class CommandTarget:
    """Run ``argv`` (no shell) with the exit record as JSON on its standard input."""

    name: str
    argv: tuple[str, ...]
    timeout: float = COMMAND_TIMEOUT


NotifyTarget = WebhookTarget | CommandTarget


def parse_targets(value: Any) -> dict[str, NotifyTarget]:
    """The ``notify:`` mapping, or ValueError naming the target and key at fault."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of target names to {url: ...} or {command: ...}")
    targets: dict[str, NotifyTarget] = {}
    for name, spec in value.items():
        if not isinstance(name, str) or not TARGET_NAME.fullmatch(name):
            raise ValueError(f"target name {name!r}: letters, digits, '.', '_' or '-', at most 64")
        try:
            targets[name] = _target(name, spec)
        except ValueError as exc:
            raise ValueError(f"target {name!r}: {exc}") from None
    return targets


def _target(name: str, spec: Any) -> NotifyTarget:
    if not isinstance(spec, dict):
        raise ValueError("expected {url: ..., secret_file: ...} or {command: [...]}")
    kinds = [key for key in ("url", "command") if key in spec]
    if len(kinds) != 1:
        raise ValueError("give exactly one of url (a webhook) or command")
    allowed = {"url", "secret_file", "timeout"} if kinds == ["url"] else {"command", "timeout"}
    unknown = sorted(str(key) for key in spec if key not in allowed)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )
    default = WEBHOOK_TIMEOUT if kinds == ["url"] else COMMAND_TIMEOUT
    timeout = _timeout(spec.get("timeout", default))
    if kinds == ["url"]:
        secret = spec.get("secret_file")
        if not isinstance(secret, str) or not secret.strip():
            raise ValueError("secret_file: required, the file holding the webhook's secret")
        return WebhookTarget(name, _url(spec["url"]), Path(secret).expanduser(), timeout)
    return CommandTarget(name, _argv(spec["command"]), timeout)


def _url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("url: expected a string")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url: expected an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url: no credentials in the URL; the signature authenticates")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        raise ValueError("url: must not contain whitespace or control characters")
    return value


def _argv(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("command: expected a non-empty list (argv; no shell runs it)")
    if not all(isinstance(word, str) and word and "\0" not in word for word in value):
        raise ValueError("command: every word must be a non-empty string")
    return tuple(value)


def _timeout(value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"timeout: {exc}") from None
    if seconds > MAX_TIMEOUT:
        raise ValueError(f"timeout: at most {MAX_TIMEOUT:.0f}s, got {seconds:g}s")
    return seconds
