from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

import watcherd
from watcherd.cli.main import main

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "inbox.example").glob("*.yaml"))


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


def test_submit_a_missing_file_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nonexistent.yaml"
    assert main(["--root", str(tmp_path), "submit", str(missing)]) == 1
    assert capsys.readouterr().err == f"watcherd: {missing}: no such file\n"


def test_submit_a_directory_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "jobs.yaml"
    folder.mkdir()
    assert main(["--root", str(tmp_path), "submit", str(folder)]) == 1
    assert capsys.readouterr().err == f"watcherd: {folder}: is a directory, not a job file\n"


def test_submit_an_unreadable_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("prompt: x\n")
    secret.chmod(0)
    if os.geteuid() == 0:  # root reads it anyway: make open() answer as it would for a user

        def refuse(self: Path, *args: object, **kwargs: object) -> NoReturn:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))

        monkeypatch.setattr(Path, "open", refuse)
    assert main(["--root", str(tmp_path), "submit", str(secret)]) == 1
    assert capsys.readouterr().err == f"watcherd: {secret}: permission denied\n"
    assert not (tmp_path / "inbox").exists()


def test_submit_reads_no_more_than_a_job_may_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--root", str(tmp_path), "submit", "/dev/zero"]) == 1
    assert "limited to 65536" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../x.yaml", "a/b.yaml", ".hidden.yaml", ""])
def test_submit_refuses_names_that_are_not_plain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    args = ["--root", str(tmp_path), "submit", "--repo-url", "https://h/a/b", "--prompt", "p"]
    assert main([*args, "--name", name]) == 1
    assert "give a plain file name" in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()


def test_submit_gives_a_dot_file_a_name_the_daemon_claims(tmp_path: Path) -> None:
    job = tmp_path / ".fix.yaml"
    job.write_text("repo_url: https://h/a/b\nprompt: p\n")
    assert main(["--root", str(tmp_path), "submit", str(job)]) == 0
    assert [p.name for p in (tmp_path / "inbox").iterdir()] == ["fix.yaml"]


def test_validate_a_missing_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexistent.yaml"
    assert main(["--root", str(tmp_path), "validate", str(missing)]) == 1
    assert capsys.readouterr().err == f"{missing}: no such file\n"


FAILED_ID = "20261126T210000Z-fix-1a2b3c"


@pytest.mark.parametrize(
    "job_id",
    [
        f"../done/{FAILED_ID}",
        "../../outside",
        f"/tmp/{FAILED_ID}",
        f"./{FAILED_ID}",
        f".{FAILED_ID}",
        f"{FAILED_ID}.yaml",
        f"{FAILED_ID}/",
        "",
        "nope",
    ],
)
def test_retry_takes_an_id_never_a_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], job_id: str
) -> None:
    root = tmp_path / "root"
    for folder in ("failed", "done"):
        (root / folder).mkdir(parents=True)
        (root / folder / f"{FAILED_ID}.yaml").write_text("x")
    (tmp_path / "outside.yaml").write_text("x")
    assert main(["--root", str(root), "retry", job_id]) == 1
    assert "retry takes a failed job's id, such as" in capsys.readouterr().err
    assert (root / "done" / f"{FAILED_ID}.yaml").exists()
    assert (tmp_path / "outside.yaml").exists()
    assert not (root / "inbox").exists()  # refused before anything was created


@pytest.mark.parametrize(("folder", "state"), [("done", "done"), ("running", "running")])
def test_retry_refuses_a_job_that_did_not_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], folder: str, state: str
) -> None:
    (tmp_path / folder).mkdir()
    (tmp_path / folder / f"{FAILED_ID}.yaml").write_text("x")
    assert main(["--root", str(tmp_path), "retry", FAILED_ID]) == 1
    assert capsys.readouterr().err == f"watcherd: job {FAILED_ID} is {state}, not failed\n"
    assert (tmp_path / folder / f"{FAILED_ID}.yaml").exists()
    assert not any((tmp_path / "inbox").iterdir())


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"watcherd {watcherd.__version__}\n"


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    package_parent = Path(watcherd.__file__).resolve().parent.parent
    run = subprocess.run(
        [sys.executable, "-m", "watcherd", "--version"],
        capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(package_parent)},
    )  # fmt: skip
    assert (run.returncode, run.stdout) == (0, f"watcherd {watcherd.__version__}\n")


def test_submit_says_how_to_follow_the_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--root", str(tmp_path), "submit", "--repo-url", "https://h/a/b", "--prompt", "p"]
    assert main([*args, "--name", "fix-42"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{tmp_path / 'inbox' / 'fix-42.yaml'}\n"  # what programs read
    assert "dropped as fix-42.yaml; follow it with" in captured.err
    assert f"watcherd --root {tmp_path} wait fix-42 " in captured.err
    assert f"watcherd --root {tmp_path} logs -f fix-42 " in captured.err


def test_submit_notify_takes_configured_target_names_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"root: {tmp_path}\nnotify: {{pager: {{command: [/bin/true]}}}}\n")
    args = ["--config", str(config), "submit", "--repo-url", "https://h/a/b", "--prompt", "p"]
    assert main([*args, "--notify", "pager"]) == 0
    (dropped,) = (tmp_path / "inbox").iterdir()
    assert "notify:\n- pager\n" in dropped.read_text()
    assert main([*args, "--notify", "https://evil.example/x"]) == 1
    assert "no notify target named 'https://evil.example/x'" in capsys.readouterr().err
