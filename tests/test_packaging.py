"""``pip install .`` (not editable): a working ``watcherd`` that carries its image's build
context, so that ``watcherd image build`` works without a checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import watcherd

pytestmark = [pytest.mark.slow, pytest.mark.docker]

REPO = Path(__file__).resolve().parent.parent
# Never part of a build: what pip and the tools leave in a working tree.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", ".venv"
)
# A machine's own CA certificate in image/certs/ (git ignores *.crt there): not for a wheel.
LOCAL_CERT = "certs/only-this-machine.crt"
TEST_TAG = "watcherd-wheel-test:latest"
NEUTRAL_DIR = "/"


def run(command: Sequence[str | Path], timeout: float = 600) -> str:
    """Run from a neutral folder without PYTHONPATH, so that the installed package is the
    one imported, never this checkout (``python -m`` and ``-c`` put the cwd on sys.path)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [str(part) for part in command],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=NEUTRAL_DIR,
    )  # fmt: skip
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel of this tree installed (its dependencies
    come from the package index)."""
    work = tmp_path_factory.mktemp("packaging")
    # pip builds inside the tree it is given and leaves build/ behind, where files deleted
    # from the source would linger into later wheels: build from a clean copy instead.
    source = work / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    (source / "image" / LOCAL_CERT).write_text("not a real certificate\n")
    wheels = work / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, source])
    (wheel,) = wheels.glob("watcherd-*.whl")
    env = work / "venv"
    run([sys.executable, "-m", "venv", env])
    run([env / "bin" / "python", "-m", "pip", "install", "-q", wheel])
    return env


def test_installed_command_and_module_report_the_version(venv: Path) -> None:
    imported = run([venv / "bin" / "python", "-c", "import watcherd; print(watcherd.__file__)"])
    assert Path(imported.strip()).is_relative_to(venv)
    expected = f"watcherd {watcherd.__version__}\n"
    assert run([venv / "bin" / "watcherd", "--version"]) == expected
    assert run([venv / "bin" / "python", "-m", "watcherd", "--version"]) == expected


def test_the_wheel_carries_every_module_of_the_checkout(venv: Path) -> None:
    package = Path(watcherd.__file__).parent
    modules = sorted(
        ".".join(("watcherd", *path.relative_to(package).with_suffix("").parts))
        for path in package.rglob("*.py")
    )
    script = f"import importlib; [importlib.import_module(m) for m in {modules!r}]"
    imported = run([venv / "bin" / "python", "-c", script])
    assert imported == ""  # a subpackage missing from the wheel fails the import


def test_the_wheel_carries_the_image_build_context(venv: Path) -> None:
    found = run(
        [venv / "bin" / "python", "-c",
         "from watcherd.config import Config; from watcherd.job.image import image_dir; "
         "print(image_dir(Config()))"]
    )  # fmt: skip
    context = Path(found.strip())
    assert context.is_relative_to(venv), f"{context} is not the installed copy"
    assert (context / "Dockerfile").read_bytes() == (REPO / "image" / "Dockerfile").read_bytes()
    entrypoint = context / "entrypoint.sh"
    assert entrypoint.read_bytes() == (REPO / "image" / "entrypoint.sh").read_bytes()
    assert os.access(entrypoint, os.X_OK), "the image runs entrypoint.sh as its entrypoint"
    assert (context / "certs").is_dir()
    # The whole of image/, recursively, but no machine's CA certificates.
    expected = {
        path.relative_to(REPO / "image")
        for path in (REPO / "image").rglob("*")
        if path.is_file() and not (path.parent.name == "certs" and path.suffix == ".crt")
    }
    packaged = {path.relative_to(context) for path in context.rglob("*") if path.is_file()}
    assert packaged == expected
    assert not (context / LOCAL_CERT).exists()


def test_the_wheel_carries_the_skill(venv: Path, tmp_path: Path) -> None:
    found = run([venv / "bin" / "python", "-c",
                 "from watcherd.cli.skill import SKILL_DIR; print(SKILL_DIR)"])  # fmt: skip
    assert Path(found.strip()).is_relative_to(venv), "not the installed copy"
    config = tmp_path / "config.yaml"
    config.write_text("")
    where = run([venv / "bin" / "watcherd", "--config", config, "--root", tmp_path,
                 "skill", "install", "--dir", tmp_path / "skills"])  # fmt: skip
    assert Path(where.strip()) == tmp_path / "skills" / "watcherd"
    skill = REPO / "skills" / "watcherd" / "SKILL.md"
    assert (tmp_path / "skills" / "watcherd" / "SKILL.md").read_bytes() == skill.read_bytes()


def _engine_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "version"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def test_installed_watcherd_builds_its_image(venv: Path, tmp_path: Path) -> None:
    """Slow the first time (it fetches Codex); with the layers of an earlier build of the
    same Dockerfile in the Engine's cache, seconds. The CA certificates are the ones .ci/run
    builds the main image with, so that its layers are reused."""
    if not _engine_answers():
        pytest.skip("no Docker Engine answers `docker version`")
    config = tmp_path / "config.yaml"
    config.write_text("")  # not /etc/watcherd/config.yaml, whatever it says
    ca_args: list[str | Path] = []
    for cert in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt")):
        ca_args += ["--ca-cert", cert]
    command = [venv / "bin" / "watcherd", "--config", config, "--root", tmp_path,
               "image", "build", "--tag", TEST_TAG, *ca_args]  # fmt: skip
    try:
        run(command, timeout=1800)
        labels = run(["docker", "image", "inspect", "--format", "{{.Config.Entrypoint}}", TEST_TAG])
        assert labels.strip() == "[/usr/local/bin/watcherd-worker]"
    finally:
        subprocess.run(["docker", "image", "rm", TEST_TAG], capture_output=True, timeout=120)
