"""The one rule for variables a job's env or the config's extra_env may set."""

from __future__ import annotations

import pytest

from watcherd.util.envnames import check_env, is_reserved


@pytest.mark.parametrize(
    "name",
    ["PATH", "HOME", "PROMPT", "REPO_URL", "LD_PRELOAD", "GIT_DIR", "CODEX_HOME",
     "WATCHERD_JOB_ID", "SSL_CERT_FILE", "OPENAI_API_KEY"],
)  # fmt: skip
def test_reserved_names(name: str) -> None:
    assert is_reserved(name)
    with pytest.raises(ValueError, match=f"{name} is reserved and cannot be set by a job"):
        check_env({name: "x"}, setter="a job")


@pytest.mark.parametrize("name", ["CI", "SCRIPTED_API_KEY", "_X", "path", "MY_GIT_TOKEN"])
def test_ordinary_names(name: str) -> None:
    assert not is_reserved(name)
    assert check_env({name: 1}, setter="a job") == {name: "1"}


@pytest.mark.parametrize("name", ["1X", "A-B", "A B", "", "É", "A\n"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(ValueError, match="is not a valid variable name"):
        check_env({name: "x"}, setter="a job")


def test_values_are_strings_or_numbers() -> None:
    assert check_env({"A": 1.5, "B": "x"}, setter="a job") == {"A": "1.5", "B": "x"}
    for bad in (True, None, ["x"], {"y": 1}):
        with pytest.raises(ValueError, match="A: expected a string or number"):
            check_env({"A": bad}, setter="a job")
