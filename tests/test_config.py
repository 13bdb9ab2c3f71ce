"""The config: file, then environment, then flags; every bad value named by its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcherd.config import ConfigError, load_config


def write_config(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "config.yaml"
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = write_config(tmp_path, "concurrency: 4\nimage: from-file\n")
    config = load_config(path, environ={"WATCHERD_IMAGE": "from-env"}, root=str(tmp_path))
    assert (config.concurrency, config.image, config.root) == (4, "from-env", tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("concurrency: 2\nimage: x\nconcurrency: 3\n", "line 3: duplicate key 'concurrency'"),
        ("extra_env:\n  A: '1'\n  A: '2'\n", "line 3: duplicate key 'A' (first on line 2)"),
    ],
)
def test_duplicate_keys_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(write_config(tmp_path, b"image: caf\xe9\n"), environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path, environ={})  # a directory
