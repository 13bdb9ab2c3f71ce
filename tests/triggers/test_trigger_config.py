"""The config's schedules: and hooks: sections, each mistake named by its schedule or hook
and key when the config loads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from watcherd.config import ConfigError
from watcherd.config.load import _build

JOB = {"repo_url": "https://git.example/a.git", "prompt": "x"}


def schedules(**spec: Any) -> dict[str, Any]:
    return {"schedules": {"nightly": {"cron": "0 3 * * *", "job": JOB, **spec}}}


def test_a_schedule_loads_as_a_frozen_record() -> None:
    config = _build(schedules(timezone="Europe/Berlin", catchup="none", overlap="allow"), "t")
    schedule = config.schedules["nightly"]
    assert (schedule.cron, schedule.timezone, schedule.catchup, schedule.overlap) == (
        "0 3 * * *", "Europe/Berlin", "none", "allow"
    )  # fmt: skip
    assert schedule.enabled and dict(schedule.job) == JOB
    with pytest.raises(AttributeError):
        schedule.cron = "* * * * *"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"cron": "0 3 * *"}, "schedule 'nightly': cron: expected 5 fields"),
        ({"cron": "0 0 0 3 * *"}, "cron: expected 5 fields"),  # seconds: not cron's
        ({"cron": "61 * * * *"}, "Bad minute"),
        ({"cron": "0 0 30 2 *"}, "Bad day-of-month"),  # 30 February never comes
        ({"cron": "* * * * *"}, "fires every 60s, more often than schedule_min_interval (300s)"),
        ({"timezone": "Mars/Olympus"}, "timezone: 'Mars/Olympus' is not an IANA time zone"),
        ({"catchup": "all"}, "catchup: expected one of latest, none"),
        ({"overlap": "queue"}, "overlap: expected one of skip, allow"),
        ({"enabled": "yes"}, "enabled: expected true or false"),
        ({"job": None}, "job: expected a job file's keys"),
        ({"every": "1h"}, "unknown key(s) every"),
    ],
)
def test_schedule_mistakes_are_named(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _build({**schedules(**spec), "schedule_min_interval": "5m"}, "t")


def test_schedule_ids_are_safe_names() -> None:
    with pytest.raises(ConfigError, match=re.escape("schedule id '../x'")):
        _build({"schedules": {"../x": {"cron": "0 3 * * *", "job": JOB}}}, "t")


def test_every_minute_is_allowed_by_the_default_floor() -> None:
    assert _build(schedules(cron="* * * * *"), "t").schedule_min_interval == 60


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"secret_file": ""}, "secret_file: required"),
        ({"format": "gitlab"}, "format: expected one of github, json"),
        ({"events": ["push"]}, "events: expected some of issues, issue_comment"),
        ({"associations": ["ADMIN"]}, "associations: expected some of OWNER"),
        ({"fields": ["issue title"]}, "fields: 'issue title' are not dotted paths"),
        ({"max_body": "100m"}, "max_body: between 1k and 5m"),
        ({"job": {"repo_url": "x"}}, "job: expected a job file's keys, with a prompt"),
        ({"trigger": ""}, "trigger: expected a non-empty phrase"),
    ],
)
def test_hook_mistakes_are_named(tmp_path: Path, spec: dict[str, Any], message: str) -> None:
    hook = {"secret_file": str(tmp_path / "s"), "job": JOB, **spec}
    with pytest.raises(ConfigError, match=re.escape(f"hook 'h': {message}")):
        _build({"hooks": {"h": hook}}, "t")


def test_json_hooks_take_no_github_keys(tmp_path: Path) -> None:
    hook = {"secret_file": str(tmp_path / "s"), "format": "json", "trigger": "go", "job": JOB}
    with pytest.raises(ConfigError, match="are for format github"):
        _build({"hooks": {"h": hook}}, "t")
