from __future__ import annotations

import pytest

from watcherd.spool.filters import is_job_name, job_stem


@pytest.mark.parametrize("name", ["fix.yaml", "a.YML", "x.y.yml"])
def test_job_names(name: str) -> None:
    assert is_job_name(name)


@pytest.mark.parametrize(
    "name",
    [".fix.yaml", "fix.yaml.tmp", "fix.yaml.part", ".fix.yaml.swp", "fix.yaml~", "fix.json", "fix"],
)
def test_not_job_names(name: str) -> None:
    assert not is_job_name(name)


def test_stem() -> None:
    assert job_stem("fix-tests.YAML") == "fix-tests"
