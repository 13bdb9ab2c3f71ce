"""The AgentSkills skill (skills/watcherd/SKILL.md) and ``watcherd skill install``.

The skill's front matter meets the format's rules (the AgentSkills specification, and
OpenClaw's one-line keys with its ``requires`` gating); the job schema it shows is the one
the README shows and the code accepts; every ``watcherd ...`` command in it runs, in order,
on a scratch root where a stand-in daemon claims and finishes what is dropped; every file,
field, state and exit code it names is one this version has."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.helpers import CHECKOUT, cli_environ
from watcherd.cli.main import main
from watcherd.cli.skill import SKILL_DIR, install_skill
from watcherd.gateway.grants import Spent
from watcherd.job.example import JOB_FILE_EXAMPLE
from watcherd.job.results import JobState, Outcome, SavedWork, write_exit_json
from watcherd.spool.filters import is_job_name
from watcherd.spool.folders import Layout, Spool
from watcherd.spool.waiting import WaitExit

SKILL = SKILL_DIR / "SKILL.md"
README = CHECKOUT / "README.md"
# The AgentSkills specification's fields and limits (agentskills.io/specification).
ALLOWED_FIELDS = {"name", "description", "license", "compatibility", "metadata", "allowed-tools"}
NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def front_matter() -> tuple[list[str], dict[str, object], str]:
    text = SKILL.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, _, body = text[4:].partition("\n---\n")
    return head.splitlines(), yaml.safe_load(head), body


def test_the_skill_lives_in_the_top_level_skills_folder() -> None:
    assert SKILL_DIR == CHECKOUT / "skills" / "watcherd"  # a checkout: the folder itself
    assert SKILL.is_file()


def test_front_matter_meets_the_agentskills_rules() -> None:
    lines, fields, body = front_matter()
    assert set(fields) <= ALLOWED_FIELDS, set(fields) - ALLOWED_FIELDS
    name = fields["name"]
    assert isinstance(name, str) and NAME.fullmatch(name) and len(name) <= 64
    assert name == SKILL.parent.name  # the folder is named as the skill
    description = fields["description"]
    assert isinstance(description, str) and 0 < len(description.strip()) <= 1024
    assert "<" not in description and ">" not in description
    assert "Use it" in description  # says when to use it, not only what it is
    compatibility = fields["compatibility"]
    assert isinstance(compatibility, str) and len(compatibility) <= 500
    # OpenClaw reads one line per key, metadata as one line of JSON: its gating needs the
    # watcherd binary on PATH.
    assert all(re.fullmatch(r"[a-z-]+: \S.*", line) for line in lines), lines
    metadata_line = next(line for line in lines if line.startswith("metadata: "))
    metadata = json.loads(metadata_line.removeprefix("metadata: "))
    assert metadata == fields["metadata"]
    assert metadata["openclaw"]["requires"]["bins"] == ["watcherd"]
    # Short enough to load cheaply (the format asks for under 500 lines, ~5000 tokens).
    assert len(body.splitlines()) < 250 and len(body.split()) < 2000


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)


def test_the_job_schema_is_one_text_in_the_readme_the_skill_and_the_code() -> None:
    from watcherd.job.spec import KEYS

    assert JOB_FILE_EXAMPLE in yaml_blocks(README.read_text(encoding="utf-8"))
    assert JOB_FILE_EXAMPLE in yaml_blocks(SKILL.read_text(encoding="utf-8"))
    assert set(yaml.safe_load(JOB_FILE_EXAMPLE)) == KEYS  # every key, and only real ones


def commands(body: str) -> list[str]:
    """Every command line the skill shows, in order: lines of its ``sh`` blocks and
    ``watcherd ...`` in running text."""
    found = []
    for match in re.finditer(r"```sh\n(.*?)```|`(watcherd [^`]+)`", body, re.DOTALL):
        if match.group(1) is not None:
            found += [line for line in match.group(1).splitlines() if line.strip()]
        else:
            found.append(match.group(2))
    return found


def lay_out_failed(layout: Layout, job_id: str) -> None:
    """A job the daemon filed as failed, under the id the skill shows."""
    (layout.failed / f"{job_id}.yaml").write_text(JOB_FILE_EXAMPLE)
    out = layout.out_dir(job_id)
    out.mkdir(parents=True)
    write_exit_json(out, job_id, "fix-42.yaml", Outcome(JobState.FAILED, "codex exited 1"))


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[Layout]:
    """A root whose stand-in daemon claims each job dropped into the inbox and files it
    as done, with a summary and a branch, as the real one would after a run."""
    layout = Layout(tmp_path / "work")
    layout.ensure()
    spool = Spool(layout)
    stop = threading.Event()

    def daemon() -> None:
        while not stop.wait(0.05):
            for name in sorted(os.listdir(layout.inbox)):
                if not is_job_name(name):
                    continue
                job = spool.claim(name)
                if job is None:
                    continue
                out = layout.out_dir(job.job_id)
                out.mkdir(parents=True, exist_ok=True)
                (out / "summary.md").write_text("# Fixed the test\n")
                (out / "changes.patch").write_text("")
                repo = str(layout.repos / "widgets-3f2a9c1b07.git")
                saved = SavedWork(repo, f"watcherd/{job.job_id}", "a" * 40, "b" * 40, ("b" * 40,))
                outcome = Outcome(JobState.DONE, "codex finished", 1, 0, saved=saved,
                                  gateway=Spent(10, 5, 1, 0, False))  # fmt: skip
                write_exit_json(out, job.job_id, job.source_name, outcome)
                spool.finish(job, ok=True)

    thread = threading.Thread(target=daemon)
    thread.start()
    yield layout
    stop.set()
    thread.join()


def test_every_command_in_the_skill_runs_in_a_scratch_root(
    stand_in: Layout, tmp_path: Path
) -> None:
    body = front_matter()[2]
    lines = commands(body)
    assert sum(line.startswith("watcherd ") for line in lines) >= 9, lines
    workdir = tmp_path / "agent"
    workdir.mkdir()
    # The complete job the skill shows, as the file it names.
    complete = yaml_blocks(body)[1]
    assert set(yaml.safe_load(complete)) >= {"repo_url", "prompt"}
    (workdir / "fix-42.yaml").write_text(complete)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"root": str(stand_in.root)}))
    retried = re.search(r"watcherd retry (\S+)`", body)
    assert retried is not None
    lay_out_failed(stand_in, retried.group(1))
    environ = {**cli_environ(), "WATCHERD_ROOT": str(stand_in.root)}
    ran = []
    for line in lines:
        line = line.replace("/work/", f"{stand_in.root}/")
        words = shlex.split(line)
        if words[0] == "git":
            continue  # the job's branch lives in a results repo only a real run makes
        if words[0] == "watcherd":
            argv = [sys.executable, "-m", "watcherd", "--config", str(config), *words[1:]]
            done = subprocess.run(argv, cwd=workdir, env=environ, capture_output=True,
                                  text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
        else:
            done = subprocess.run(["bash", "-c", line], cwd=workdir, env=environ,
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
        if words[:2] == ["watcherd", "cancel"]:  # the stand-in has filed that job already
            assert done.returncode == 1 and "already ended (done)" in done.stderr, done.stderr
        else:
            assert done.returncode == 0, (line, done.stdout, done.stderr)
        ran.append(words[:2])
    # The job it waited for is the one it dropped, and show found it done.
    shown = subprocess.run(
        [sys.executable, "-m", "watcherd", "--config", str(config), "show", "--json", "fix-42"],
        env=environ, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert json.loads(shown)["state"] == "done"
    assert ["watcherd", "submit"] in ran and ["watcherd", "wait"] in ran
    assert ["cp", "fix-42.yaml"] in ran  # the drop by hand, a dot-name renamed in
    assert not (stand_in.failed / f"{retried.group(1)}.yaml").exists()  # retried


def test_what_the_skill_names_exists_in_this_version(tmp_path: Path) -> None:
    body = front_matter()[2]
    # The files of out/<id>/ it names are those the README lists.
    folders = README.read_text(encoding="utf-8").split("## Folders", 1)[1]
    for name in re.findall(r"`([a-z-]+\.(?:json|md|patch|jsonl|log))`", body):
        if name != "SKILL.md":
            assert f"`{name}`" in folders, name
    # The exit record's fields it names are written by the daemon.
    out = tmp_path / "out"
    out.mkdir()
    saved = SavedWork("/r/repos/x.git", "watcherd/x", "a" * 40, "b" * 40, ("b" * 40,))
    write_exit_json(out, "20261126T210000Z-x-1a2b3c", "x.yaml",
                    Outcome(JobState.DONE, "ok", 1, 0, saved=saved,
                            gateway=Spent(1, 1, 1, 0, False)))  # fmt: skip
    record = json.loads((out / "exit.json").read_text())
    section = body.split("In `out/<id>/`:", 1)[1].split("- `summary.md`", 1)[0]
    for field in re.findall(r"`([a-z_]+)`", section):
        assert field in record, field
    # Its states are the daemon's, and wait's exit codes are wait's.
    table = re.findall(r"^\| `([a-z]+)` \|", body, re.MULTILINE)
    assert set(table) == {state.value for state in JobState}
    said = body.split("how it ended:", 1)[1].split("`--timeout`", 1)[0]
    codes = {int(code): word for code, word in re.findall(r"(\d+) (no such job|[a-z]+)", said)}
    expected = {int(WaitExit.for_state(state.value)): state.value for state in JobState}
    assert codes == {**expected, int(WaitExit.UNKNOWN): "no such job"}
    assert f"{int(WaitExit.WAIT_TIMEOUT)} `--timeout` passed first" in body
    # The MCP tools it names are the server's.
    from watcherd.mcp.server import TOOLS

    mcp = body.split("## From an MCP host", 1)[1]
    named = set(re.findall(r"`([a-z_]+)`", mcp)) - {"ended"}
    assert named == {entry.name for entry in TOOLS}


# -- watcherd skill install -----------------------------------------------------------------


def test_install_copies_the_skill_and_prints_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["--root", str(tmp_path), "skill", "install"]) == 0
    default = tmp_path / "home" / ".openclaw" / "skills" / "watcherd"
    assert capsys.readouterr().out == f"{default}\n"
    assert (default / "SKILL.md").read_bytes() == SKILL.read_bytes()
    # Into any skills folder (Claude Code's, Codex's, a workspace's), or the skill's own.
    for given, where in ((tmp_path / "claude" / "skills", tmp_path / "claude" / "skills" /
                          "watcherd"),
                         (tmp_path / "ws" / "watcherd", tmp_path / "ws" / "watcherd")):  # fmt: skip
        assert main(["--root", str(tmp_path), "skill", "install", "--dir", str(given)]) == 0
        assert capsys.readouterr().out == f"{where}\n"
        assert (where / "SKILL.md").read_bytes() == SKILL.read_bytes()
        assert oct((where / "SKILL.md").stat().st_mode & 0o777) == "0o644"
    # Again: the earlier copy is replaced, nothing else is left behind.
    (default / "SKILL.md").write_text("an older skill\n")
    assert main(["--root", str(tmp_path), "skill", "install"]) == 0
    assert (default / "SKILL.md").read_bytes() == SKILL.read_bytes()
    assert sorted(p.name for p in default.iterdir()) == ["SKILL.md"]


def test_install_into_a_folder_it_cannot_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "skills"
    blocker.write_text("a file, not a folder\n")
    assert main(["--root", str(tmp_path), "skill", "install", "--dir", str(blocker)]) == 1
    assert f"watcherd: cannot install into {blocker / 'watcherd'}" in capsys.readouterr().err


def test_install_without_the_skill_says_so(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="lacks its skills/"):
        install_skill(tmp_path / "to", source=tmp_path / "nothing")


def test_the_readme_install_lines_run(tmp_path: Path) -> None:
    readme = README.read_text(encoding="utf-8")
    lines = re.findall(r"^(watcherd skill install.*?)(?:\s+#.*)?$", readme, re.MULTILINE)
    assert len(lines) == 4
    home, workspace = tmp_path / "home", tmp_path / "workspace"
    workspace.mkdir()
    environ = {**cli_environ(), "HOME": str(home)}
    for line in lines:
        words = shlex.split(line)
        words = [os.path.expanduser(w).replace(os.path.expanduser("~"), str(home)) for w in words]
        done = subprocess.run([sys.executable, "-m", "watcherd", "--root", str(tmp_path),
                               *words[1:]], cwd=workspace, env=environ, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        where = Path(done.stdout.strip())
        assert where.name == "watcherd" and (where / "SKILL.md").is_file()
        assert where.is_relative_to(home) or where.is_relative_to(workspace), where
