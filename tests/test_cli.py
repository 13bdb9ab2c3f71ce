from __future__ import annotations

from pathlib import Path

import pytest

from watcherd.cli import main

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "inbox.example").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_jobs(example: Path, tmp_path: Path) -> None:
    assert main(["--root", str(tmp_path), "validate", str(example)]) == 0


def test_validate_prints_the_daemons_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompt: ''\n")
    assert main(["--root", str(tmp_path), "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml: prompt: must not be empty; repo_url: required" in err


def test_submit_writes_safely_and_never_replaces(tmp_path: Path) -> None:
    args = [
        "--root",
        str(tmp_path),
        "submit",
        "--repo-url",
        "https://h/acme/w.git",
        "--prompt",
        "go",
    ]
    assert main(args) == 0
    assert main(args) == 0
    files = sorted(p.name for p in (tmp_path / "inbox").iterdir())
    assert len(files) == 2 and all(f.endswith(".yaml") and not f.startswith(".") for f in files)


def test_submit_refuses_invalid_jobs(tmp_path: Path) -> None:
    assert main(["--root", str(tmp_path), "submit", "--repo-url", "ext::sh", "--prompt", "x"]) == 1
    assert not (tmp_path / "inbox").exists() or not any((tmp_path / "inbox").iterdir())


def test_retry_moves_a_failed_job_back(tmp_path: Path) -> None:
    (tmp_path / "failed").mkdir(parents=True)
    (tmp_path / "failed" / "20261126T000000Z-fix-abcdef.yaml").write_text("x")
    assert main(["--root", str(tmp_path), "retry", "20261126T000000Z-fix-abcdef"]) == 0
    (moved,) = (tmp_path / "inbox").iterdir()
    assert moved.name.startswith("fix-retry-") and moved.read_text() == "x"
    assert main(["--root", str(tmp_path), "retry", "nope"]) == 1


def test_bad_config_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("concurrency: 0\ncolour: red\n")
    assert main(["--config", str(config), "status"]) == 2
    assert "unknown setting(s): colour" in capsys.readouterr().err
