"""The config's ``hooks:``: named inbound triggers, each with its own secret and job template,
checked when the config loads. What a delivery may bring is named here: the payload fields
a template uses, and only in its prompt. Everything else of the job (repository, agent,
image, flags, limits) is the template's, which is the operator's.

    hooks:
      triage:
        secret_file: /etc/watcherd/hooks/triage.secret   # HMAC-SHA256 key, as GitHub's
        format: github                                   # or json
        events: [issue_comment]                          # github: issues, issue_comment
        trigger: "/watcherd triage"                      # github: the phrase to act on
        associations: [OWNER, MEMBER, COLLABORATOR]      # github: who may say it
        fields: [issue.title, issue.body, comment.body]  # what the prompt may quote
        max_body: 256k
        job:
          repo_url: https://github.com/team/app.git
          prompt: "Triage this issue. Title: {issue.title} Body: {issue.body}"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from watcherd.util.units import parse_size

HOOK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}")
FORMATS = ("github", "json")
GITHUB_EVENTS = ("issues", "issue_comment")
# GitHub's author_association values, from the most trusted down.
ASSOCIATIONS = (
    "OWNER", "MEMBER", "COLLABORATOR", "CONTRIBUTOR", "FIRST_TIME_CONTRIBUTOR",
    "FIRST_TIMER", "MANNEQUIN", "NONE",
)  # fmt: skip
DEFAULT_ASSOCIATIONS = ("OWNER", "MEMBER", "COLLABORATOR")
DEFAULT_MAX_BODY = 256 * 1024
MAX_BODY = 5 * 1024**2
FIELD_PATH = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")
# {issue.title} in a prompt: a field the hook names. Other braces ({"a": 1}, {}) are text.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\}")
KEYS = frozenset(
    {"secret_file", "format", "events", "actions", "trigger", "associations", "fields",
     "max_body", "job"}
)  # fmt: skip


@dataclass(frozen=True)
class Hook:
    name: str
    secret_file: Path
    job: Mapping[str, Any] = field(default_factory=dict)  # the template: a job file's keys
    format: str = "github"
    fields: tuple[str, ...] = ()  # dotted paths into the payload the prompt may quote
    events: tuple[str, ...] = GITHUB_EVENTS  # github only
    actions: tuple[str, ...] = ("opened",)  # github issues events only; comments: created
    trigger: str | None = None  # github: the phrase the comment (or new issue) must hold
    associations: tuple[str, ...] = DEFAULT_ASSOCIATIONS  # github: who may trigger
    max_body: int = DEFAULT_MAX_BODY


def parse_hooks(value: Any) -> dict[str, Hook]:
    """The ``hooks:`` mapping, or ValueError naming the hook and key at fault."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of hook names to {secret_file: ..., job: {...}}")
    hooks: dict[str, Hook] = {}
    for name, spec in value.items():
        if not isinstance(name, str) or not HOOK_NAME.fullmatch(name):
            raise ValueError(f"hook name {name!r}: letters, digits, '_' or '-', at most 48")
        try:
            hooks[name] = _hook(name, spec)
        except ValueError as exc:
            raise ValueError(f"hook {name!r}: {exc}") from None
    return hooks


def _hook(name: str, spec: Any) -> Hook:
    if not isinstance(spec, dict):
        raise ValueError("expected {secret_file: ..., job: {...}}")
    unknown = sorted(str(key) for key in spec if key not in KEYS)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(KEYS))})"
        )
    secret = spec.get("secret_file")
    if not isinstance(secret, str) or not secret.strip():
        raise ValueError("secret_file: required, the file holding the hook's HMAC secret")
    form = spec.get("format", "github")
    if form not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {form!r}")
    fields = _strings(spec.get("fields", []), "fields")
    bad = [path for path in fields if not FIELD_PATH.fullmatch(path)]
    if bad:
        raise ValueError(f"fields: {', '.join(map(repr, bad))} are not dotted paths (issue.title)")
    events = _strings(spec.get("events", list(GITHUB_EVENTS)), "events")
    if form == "github" and not set(events) <= set(GITHUB_EVENTS):
        raise ValueError(f"events: expected some of {', '.join(GITHUB_EVENTS)}")
    associations = tuple(a.upper() for a in _strings(
        spec.get("associations", list(DEFAULT_ASSOCIATIONS)), "associations"
    ))  # fmt: skip
    if not set(associations) <= set(ASSOCIATIONS):
        raise ValueError(f"associations: expected some of {', '.join(ASSOCIATIONS)}")
    trigger = spec.get("trigger")
    if trigger is not None and (not isinstance(trigger, str) or not trigger.strip()):
        raise ValueError("trigger: expected a non-empty phrase")
    if form != "github" and (trigger is not None or "associations" in spec or "events" in spec):
        raise ValueError("trigger, associations and events are for format github")
    max_body = parse_size(spec.get("max_body", DEFAULT_MAX_BODY))
    if not 1024 <= max_body <= MAX_BODY:
        raise ValueError(f"max_body: between 1k and {MAX_BODY // 1024**2}m, got {max_body}")
    job = spec.get("job")
    if not isinstance(job, dict) or not isinstance(job.get("prompt"), str):
        raise ValueError("job: expected a job file's keys, with a prompt")
    _check_template(job, fields)
    return Hook(
        name=name, secret_file=Path(secret).expanduser(), job=MappingProxyType(dict(job)),
        format=str(form),
        fields=fields, events=events, actions=_strings(spec.get("actions", ["opened"]), "actions"),
        trigger=trigger, associations=associations, max_body=max_body,
    )  # fmt: skip


def _check_template(job: dict[str, Any], fields: tuple[str, ...]) -> None:
    """Payload fields reach the prompt, and nothing else: a {field} anywhere else in the
    template, or one the hook does not name, is refused now rather than at a delivery."""
    for key, value in job.items():
        if key == "prompt":
            continue
        if PLACEHOLDER.search(repr(value)):
            raise ValueError(
                f"job: {key}: payload fields may only be used in the prompt; the rest of "
                "the job is the template's"
            )
    unknown = sorted({m for m in PLACEHOLDER.findall(job["prompt"]) if m not in fields})
    if unknown:
        raise ValueError(f"job: prompt uses {', '.join(unknown)}, not in the hook's fields")


def _strings(value: Any, key: str) -> tuple[str, ...]:
    listed = [value] if isinstance(value, str) else value
    if not isinstance(listed, list) or not all(isinstance(v, str) and v for v in listed):
        raise ValueError(f"{key}: expected a list of strings")
    return tuple(listed)
