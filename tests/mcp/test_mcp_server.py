"""``watcherd mcp`` through the MCP SDK's own client over stdio, against ``python -m watcherd
mcp`` in a subprocess: every tool, every error, and read-only mode. The root is laid out as
the daemon leaves it (the test claims and finishes jobs itself): no daemon, no Engine."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
import yaml
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from tests.support.helpers import CHECKOUT, cli_environ, wait_for
from watcherd.cli.main import main
from watcherd.gateway.grants import Spent
from watcherd.job.example import key_notes
from watcherd.job.results import JobState, Outcome, SavedWork, write_exit_json
from watcherd.job.spec import KEYS
from watcherd.mcp.server import TOOLS
from watcherd.mcp.tools import MAX_WAIT_SECONDS
from watcherd.spool.folders import Claimed, Layout, Spool
from watcherd.spool.lookup import JobRef, Place
from watcherd.spool.waiting import WaitExit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "codex"
REPO = "https://h.example/acme/widgets.git"
T = TypeVar("T")
Session = Client


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    Layout(root).ensure()
    return root


@pytest.fixture
def config_path(tmp_path: Path, root: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"root": str(root)}))
    return path


def session(config: Path, body: Callable[[Session], Awaitable[T]], *flags: str) -> T:
    """``body`` with a client connected to ``watcherd --config CONFIG mcp FLAGS``."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "watcherd", "--config", str(config), "mcp", *flags],
        env=cli_environ(),
    )

    async def run() -> T:
        async with Client(params) as client:
            return await body(client)

    return anyio.run(run)


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    # The text a host without structured output reads is the same object.
    text = result.content[0].text  # type: ignore[union-attr]
    assert json.loads(text) == result.structured_content
    return result.structured_content


def error(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


def claim(root: Path, name: str) -> Claimed:
    job = Spool(Layout(root)).claim(name)
    assert job is not None
    Layout(root).out_dir(job.job_id).mkdir()
    return job


def finish(root: Path, job: Claimed, state: JobState = JobState.DONE, reason: str = "ok") -> None:
    out = Layout(root).out_dir(job.job_id)
    (out / "summary.md").write_text("# Fixed\n\nThe test \x1b[31mpasses\x1b[0m now.\n")
    saved = SavedWork("/r/repos/widgets-1.git", f"watcherd/{job.job_id}", "a" * 40, "b" * 40,
                      ("b" * 40,))  # fmt: skip
    outcome = Outcome(state, reason, attempts=1, exit_code=0, saved=saved,
                      gateway=Spent(120, 30, 2, 0, over_budget=False))  # fmt: skip
    write_exit_json(out, job.job_id, job.source_name, outcome)
    Spool(Layout(root)).finish(job, ok=state is JobState.DONE)


@pytest.fixture
def claimer(root: Path) -> Iterator[Callable[[str], None]]:
    """The daemon's claim, in a thread: claims ``name`` as soon as it is in the inbox."""
    threads: list[threading.Thread] = []

    def start(name: str) -> None:
        def run() -> None:
            wait_for(lambda: (Layout(root).inbox / name).exists(), 10, f"{name} in the inbox")
            claim(root, name)

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)

    yield start
    for thread in threads:
        thread.join()


# -- the tools on offer ---------------------------------------------------------------------


def test_the_tools_their_descriptions_and_the_job_fields(config_path: Path) -> None:
    async def body(client: Session) -> Any:
        return (await client.list_tools()).tools, client.server_info

    tools, info = session(config_path, body)
    assert [tool.name for tool in tools] == [entry.name for entry in TOOLS]
    assert info is None or info.name == "watcherd"
    by_name = {tool.name: tool for tool in tools}
    for tool in tools:
        assert tool.description and len(tool.description) > 80, tool.name
    submit = by_name["submit_job"]
    properties = submit.input_schema["properties"]
    # Every key of a job file, each described as the README's "Job file" describes it.
    assert set(properties) - {"name"} == KEYS
    assert submit.input_schema["required"] == ["repo_url", "prompt"]
    notes = key_notes()
    assert properties["timeout"]["description"] == notes["timeout"]
    assert "90s / 30m / 2h" in properties["timeout"]["description"]
    wait = by_name["wait_job"].input_schema["properties"]["timeout_seconds"]
    assert f"at most {MAX_WAIT_SECONDS:g}" in wait["description"]  # bounded, and says so
    assert not submit.annotations.read_only_hint  # type: ignore[union-attr]
    assert by_name["get_job"].annotations.read_only_hint  # type: ignore[union-attr]


# -- submit_job -----------------------------------------------------------------------------


def test_submit_drops_a_checked_job_and_returns_its_id_once_claimed(
    config_path: Path, root: Path, claimer: Callable[[str], None]
) -> None:
    claimer("fix-42.yaml")

    async def body(client: Session) -> dict[str, Any]:
        return ok(await client.call_tool("submit_job", {
            "repo_url": REPO, "prompt": "Fix the failing test", "name": "fix-42",
            "timeout": "30m", "retries": 0, "env": {"CI": "1"}, "cpus": 1,
        }))  # fmt: skip

    submitted = session(config_path, body)
    assert submitted["name"] == "fix-42.yaml"
    assert submitted["state"] == "running"
    job_id = submitted["job_id"]
    assert job_id and job_id.split("-")[1] == "fix"
    assert f"wait_job(job={job_id!r})" in submitted["next"]
    # What the daemon claimed is the job file a person would have written.
    written = yaml.safe_load((root / "running" / f"{job_id}.yaml").read_text())
    assert written == {"repo_url": REPO, "prompt": "Fix the failing test", "timeout": "30m",
                       "env": {"CI": "1"}, "retries": 0, "cpus": 1.0}  # fmt: skip


def test_a_job_claimed_before_submit_looks_is_its_own_not_an_older_one_of_its_name(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon with no settle time may claim a job before submit_job looks for it; names
    are reused, so the job is followed by the inode it was dropped with."""
    from tests.support.quick_claim import claimed_at_once
    from watcherd.config import Config
    from watcherd.mcp.tools import JobTools

    claimed: list[str] = []
    monkeypatch.setattr(
        "watcherd.mcp.tools.submit", claimed_at_once(claimed, f"repo_url: {REPO}\n")
    )
    answer = JobTools(Config(root=root)).submit_job(repo_url=REPO, prompt="one", name="fix")
    assert answer["name"] == "fix.yaml"
    assert answer["job_id"] == claimed[0]


def test_submit_without_a_daemon_leaves_the_job_queued(config_path: Path, root: Path) -> None:
    async def body(client: Session) -> list[dict[str, Any]]:
        args = {"repo_url": REPO, "prompt": "one"}
        return [ok(await client.call_tool("submit_job", args)) for _ in range(2)]

    first, second = session(config_path, body)
    assert first["job_id"] is None and first["state"] == "queued"
    assert first["name"] == "job.yaml"
    assert second["name"] != "job.yaml" and second["name"].startswith("job-")  # never replaced
    assert "is the daemon running?" in first["next"]
    assert sorted(p.name for p in (root / "inbox").iterdir()) == sorted(
        [first["name"], second["name"]]
    )


BAD_JOBS = [
    {"repo_url": "ftp://h/x.git", "prompt": ""},
    {"repo_url": REPO, "prompt": "x", "max_turns": 3},
    {"repo_url": REPO, "prompt": "x", "notify": ["pager"]},
    {"repo_url": REPO, "prompt": "x", "branch": "watcherd/mine"},
    {"repo_url": REPO, "prompt": "x", "timeout": "forever"},
    {"repo_url": REPO, "prompt": "x", "flags": ["--config", "x=1"]},
]


def test_submit_errors_are_the_clis(
    config_path: Path, root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def body(client: Session) -> list[str]:
        bad = [error(await client.call_tool("submit_job", args)) for args in BAD_JOBS]
        names = [
            error(
                await client.call_tool(
                    "submit_job", {"repo_url": REPO, "prompt": "x", "name": name}
                )
            )
            for name in ("../escape", ".hidden")
        ]
        missing = error(await client.call_tool("submit_job", {"repo_url": REPO}))
        typed = error(await client.call_tool("submit_job", {"repo_url": REPO, "prompt": "x",
                                                            "retries": "many"}))  # fmt: skip
        return [*bad, *names, missing, typed]

    *bad, escape, hidden, missing, typed = session(config_path, body)
    for fields, got in zip(BAD_JOBS, bad, strict=True):
        # The reason `watcherd validate` gives for the same job file, word for word.
        job_file = tmp_path / "job.yaml"
        job_file.write_text(yaml.safe_dump(fields))
        assert main(["--config", str(config_path), "validate", str(job_file)]) == 1
        reason = capsys.readouterr().err.strip().removeprefix(f"{job_file}: ")
        assert got.endswith(f"job.yaml: {reason}"), (got, reason)
    for name, got in (("../escape", escape), (".hidden", hidden)):
        assert main(["--config", str(config_path), "submit", "--repo-url", REPO,
                     "--prompt", "x", "--name", name]) == 1  # fmt: skip
        reason = capsys.readouterr().err.strip().removeprefix(f"watcherd: --name {name!r}: ")
        assert reason in got
    assert "protocol 'ftp' is not allowed" in bad[0] and "must not be empty" in bad[0]
    assert "prompt" in missing and "required" in missing.lower()  # the SDK's schema check
    assert "retries" in typed
    assert list((root / "inbox").iterdir()) == []  # nothing refused was dropped


def test_submit_refuses_a_name_too_long_or_with_control_characters(
    config_path: Path, root: Path
) -> None:
    """Each refused for the name, with the reason: not an OS error about a temporary file,
    nor a file with a newline in its name, nor a raw NUL in the answer."""
    names = ("x" * 300, "ok\n", "tab\there", "a\x00b", "é" * 120)

    async def body(client: Session) -> list[str]:
        return [
            error(await client.call_tool("submit_job", {"repo_url": REPO, "prompt": "x",
                                                        "name": name}))
            for name in names
        ]  # fmt: skip

    long, newline, tab, nul, wide = session(config_path, body)
    assert "name 'xxx" in long and "300 bytes long; at most 200" in long
    assert "cannot write" not in long and len(long) < 1000
    for got in (newline, tab):
        assert "control characters" in got
    assert "\x00" not in nul and "name 'a\\x00b'" in nul
    assert "240 bytes long" in wide
    assert list((root / "inbox").iterdir()) == []


def test_submit_into_a_root_it_cannot_write(tmp_path: Path) -> None:
    root = tmp_path / "work"
    root.mkdir()
    (root / "inbox").write_text("a file where the inbox should be\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"root": str(root)}))

    async def body(client: Session) -> str:
        return error(await client.call_tool("submit_job", {"repo_url": REPO, "prompt": "x"}))

    assert f"cannot write into {root / 'inbox'}" in session(config, body)


# -- get_job, wait_job, job_progress, list_jobs ---------------------------------------------


def test_get_job_while_queued_running_and_done(config_path: Path, root: Path) -> None:
    (root / "inbox" / "fix-42.yaml").write_text(f"repo_url: {REPO}\nprompt: fix it\n")

    async def body(client: Session) -> list[dict[str, Any]]:
        views = [ok(await client.call_tool("get_job", {"job": "fix-42"}))]
        job = claim(root, "fix-42.yaml")
        events = (FIXTURES / "exec-commands.jsonl").read_bytes().splitlines(keepends=True)
        (root / "out" / job.job_id / "events.jsonl").write_bytes(b"".join(events[:6]))
        views.append(ok(await client.call_tool("get_job", {"job": "fix-42.yaml"})))
        finish(root, job)
        views.append(ok(await client.call_tool("get_job", {"job": job.job_id})))
        return views

    queued, running, done = session(config_path, body)
    assert queued["state"] == "queued" and queued["job_id"] is None and not queued["ended"]
    assert running["state"] == "running" and not running["ended"]
    assert running["last_activity"] == "running sleep 2; ls"
    assert running["branch"] == f"watcherd/{running['job_id']}" and running["fetch"] is None
    assert done["state"] == "done" and done["reason"] == "ok" and done["ended"]
    assert done["summary"] == "# Fixed\n\nThe test passes now.\n"  # control sequences gone
    assert done["usage"]["input_tokens"] == 120 and done["usage"]["output_tokens"] == 30
    assert done["fetch"] == f"git fetch /r/repos/widgets-1.git watcherd/{done['job_id']}"
    assert done["record"]["commits"] == ["b" * 40]
    assert done["out_dir"] == str(root / "out" / done["job_id"])


def test_wait_job_returns_the_record_or_still_running(config_path: Path, root: Path) -> None:
    (root / "inbox" / "slow.yaml").write_text(f"repo_url: {REPO}\nprompt: fix it\n")
    job: list[Claimed] = []

    def daemon() -> None:
        time.sleep(1.0)
        job.append(claim(root, "slow.yaml"))
        time.sleep(1.0)
        finish(root, job[0], JobState.TIMEOUT, "timed out after 30m")

    async def body(client: Session) -> list[tuple[float, dict[str, Any]]]:
        thread = threading.Thread(target=daemon)
        thread.start()
        results = []
        try:
            for seconds in (0.3, 30.0, 0.0):
                started = time.monotonic()
                result = ok(await client.call_tool(
                    "wait_job", {"job": "slow", "timeout_seconds": seconds}
                ))  # fmt: skip
                results.append((time.monotonic() - started, result))
        finally:
            thread.join()
        return results

    (short, not_yet), (long, ended), (_, again) = session(config_path, body)
    assert not not_yet["ended"] and not_yet["state"] == "queued"
    assert "has not ended after 0.3s; wait again" in not_yet["note"]
    assert short < 5
    assert ended["ended"] and ended["state"] == "timeout"  # woken by the end, not the time-out
    assert ended["reason"] == "timed out after 30m" and ended["job_id"] == job[0].job_id
    assert 1.0 < long < 15
    assert again["state"] == "timeout"  # an ended job answers at once, whatever the time-out


def test_wait_job_on_a_job_removed_from_the_inbox(config_path: Path, root: Path) -> None:
    entry = root / "inbox" / "gone.yaml"
    entry.write_text(f"repo_url: {REPO}\nprompt: fix it\n")

    async def body(client: Session) -> str:
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.to_thread.run_sync, lambda: (time.sleep(0.5), entry.unlink()))
            return error(await client.call_tool("wait_job", {"job": "gone",
                                                             "timeout_seconds": 20}))  # fmt: skip

    assert "gone.yaml (queued in the inbox) is gone (removed before it was claimed?)" in session(
        config_path, body
    )


def test_wait_job_refuses_a_time_out_that_is_not_a_number(config_path: Path, root: Path) -> None:
    """A NaN time-out ("nan" passes the SDK's float check) never compares past the deadline:
    the wait would be unbounded. Refused, naming the field; the server keeps answering."""
    (root / "inbox" / "slow.yaml").write_text(f"repo_url: {REPO}\nprompt: fix it\n")

    async def body(client: Session) -> tuple[str, dict[str, Any]]:
        with anyio.fail_after(20):
            refused = error(
                await client.call_tool("wait_job", {"job": "slow", "timeout_seconds": "nan"})
            )
            after = ok(await client.call_tool("wait_job", {"job": "slow", "timeout_seconds": 0}))
        return refused, after

    refused, after = session(config_path, body)
    assert "timeout_seconds" in refused and "nan" in refused
    assert after["state"] == "queued"


def test_unknown_arguments_are_refused_by_name(config_path: Path, root: Path) -> None:
    """A misspelt field (timout) would be dropped silently and the job run without it."""
    (root / "inbox" / "seen.yaml").write_text(f"repo_url: {REPO}\nprompt: fix it\n")

    async def body(client: Session) -> list[str]:
        return [
            error(await client.call_tool(tool, args))
            for tool, args in (
                ("submit_job", {"repo_url": REPO, "prompt": "x", "timout": "5m"}),
                ("submit_job", {"repo_url": REPO, "prompt": "x", "job_id": "mine", "x": 1}),
                ("get_job", {"job": "seen", "verbose": True}),
            )
        ]

    typo, two, extra = session(config_path, body)
    assert "submit_job: unknown argument timout" in typo and "timeout" in typo
    assert "unknown arguments job_id, x" in two
    assert "get_job: unknown argument verbose" in extra
    assert [p.name for p in (root / "inbox").iterdir()] == ["seen.yaml"]  # nothing submitted


def test_job_progress_renders_the_last_steps(config_path: Path, root: Path) -> None:
    (root / "inbox" / "fix-42.yaml").write_text(f"repo_url: {REPO}\nprompt: fix it\n")

    async def body(client: Session) -> list[dict[str, Any]]:
        queued = ok(await client.call_tool("job_progress", {"job": "fix-42"}))
        job = claim(root, "fix-42.yaml")
        events = (FIXTURES / "exec-commands.jsonl").read_bytes()
        (root / "out" / job.job_id / "events.jsonl").write_bytes(events)
        last3 = ok(await client.call_tool("job_progress", {"job": "fix-42", "last": 3}))
        every = ok(await client.call_tool("job_progress", {"job": "fix-42", "last": 10_000}))
        return [queued, last3, every]

    queued, last3, everything = session(config_path, body)
    assert (
        queued["lines"] == []
        and "fix-42.yaml (queued in the inbox): no events yet" in (queued["note"])
    )
    assert last3["state"] == "running" and len(last3["lines"]) == 3
    assert everything["lines"][-3:] == last3["lines"]
    assert everything["total_lines"] == len(everything["lines"])
    assert any(line.startswith("$ ") for line in everything["lines"])  # as `logs` renders it


def test_list_jobs_by_state_name_agent_and_repository(config_path: Path, root: Path) -> None:
    body_text = f"repo_url: {REPO}\nprompt: fix it\n"
    for name in ("a.yaml", "b.yaml", "c.yaml"):
        (root / "inbox" / name).write_text(body_text)
    (root / "inbox" / "d.yaml").write_text(f"repo_url: {REPO}x\nprompt: x\nagent: claude\n")
    done = claim(root, "a.yaml")
    finish(root, done)
    failed = claim(root, "b.yaml")
    finish(root, failed, JobState.INVALID, "prompt: must not be empty")
    (root / "inbox" / "a.yaml").write_text(body_text)  # the name again, queued

    async def body(client: Session) -> list[dict[str, Any]]:
        return [
            ok(await client.call_tool("list_jobs", args))
            for args in ({}, {"state": "invalid"}, {"name": "a"}, {"limit": 1},
                         {"state": "done"}, {"agent": "claude"}, {"repo_url": f"{REPO}x"})
        ]  # fmt: skip

    everything, invalid, named_a, one, only_done, claude, other_repo = session(config_path, body)
    states = [(job["name"], job["state"]) for job in everything["jobs"]]
    assert sorted(states[:3]) == [("a.yaml", "queued"), ("c.yaml", "queued"), ("d.yaml", "queued")]
    assert sorted(states[3:]) == [("a.yaml", "done"), ("b.yaml", "invalid")]
    assert [job["job_id"] for job in invalid["jobs"]] == [failed.job_id]
    assert invalid["jobs"][0]["reason"] == "prompt: must not be empty"
    assert [(job["job_id"], job["state"]) for job in named_a["jobs"]] == [
        (None, "queued"),
        (done.job_id, "done"),
    ]
    assert len(one["jobs"]) == 1
    assert [job["job_id"] for job in only_done["jobs"]] == [done.job_id]
    assert only_done["jobs"][0]["input_tokens"] == 120  # the record's usage
    assert [job["name"] for job in claude["jobs"]] == ["d.yaml"]
    assert [job["name"] for job in other_repo["jobs"]] == ["d.yaml"]


def test_the_words_for_a_job_are_the_clis(
    config_path: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """client/find.py says what cli/main.py says (the CLI keeps its own copy for now)."""
    from watcherd.client.find import NoSuchJob, find_job, where
    from watcherd.client.submit import os_problem

    cli_main = importlib.import_module("watcherd.cli.main")  # the package's `main` is a function

    assert main(["--config", str(config_path), "show", "nope"]) == WaitExit.UNKNOWN
    with pytest.raises(NoSuchJob) as caught:
        find_job(Layout(root), "nope")
    assert capsys.readouterr().err == f"watcherd: {caught.value}\n"
    (root / "inbox" / "q.yaml").write_text(f"repo_url: {REPO}\nprompt: x\n")
    queued = find_job(Layout(root), "q")
    claimed = JobRef(Place.RUNNING, "20261126T210000Z-q-1a2b3c", "q.yaml")
    assert cli_main.where is where  # the CLI says it with the same functions
    assert cli_main.os_problem is os_problem
    assert where(queued) == "q.yaml (queued in the inbox)"
    assert where(claimed) == "job 20261126T210000Z-q-1a2b3c (running)"
    assert os_problem(FileNotFoundError(2, "x")) == "no such file"


def test_errors_for_unknown_jobs_and_bad_filters(config_path: Path) -> None:
    async def body(client: Session) -> list[str]:
        return [
            error(await client.call_tool(tool, args))
            for tool, args in (
                ("get_job", {"job": "nope"}),
                ("wait_job", {"job": "20261126T210000Z-nope-1a2b3c"}),
                ("job_progress", {"job": "../etc/passwd"}),
                ("list_jobs", {"state": "bogus"}),
                ("get_job", {}),
                ("no_such_tool", {}),
            )
        ]

    errors = session(config_path, body)
    root = yaml.safe_load(config_path.read_text())["root"]
    assert f"no job 'nope' under {root} (give the name it was dropped as" in errors[0]
    assert "no job '20261126T210000Z-nope-1a2b3c'" in errors[1]
    assert "no job '../etc/passwd'" in errors[2]
    assert "unknown state 'bogus': choose from queued, running, done, failed" in errors[3]
    assert "job" in errors[4]  # the SDK's own check of the arguments names the field
    assert "no_such_tool" in errors[5]


# -- read-only ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["config", "flag"])
def test_read_only_offers_no_submit_and_refuses_one(
    how: str, tmp_path: Path, root: Path, config_path: Path
) -> None:
    flags: tuple[str, ...] = ()
    if how == "config":
        config_path.write_text(yaml.safe_dump({"root": str(root), "mcp": {"read_only": True}}))
    else:
        flags = ("--read-only",)
    (root / "inbox" / "seen.yaml").write_text(f"repo_url: {REPO}\nprompt: fix it\n")

    async def body(client: Session) -> tuple[list[str], str, dict[str, Any], str | None]:
        names = [tool.name for tool in (await client.list_tools()).tools]
        refused = error(await client.call_tool("submit_job", {"repo_url": REPO, "prompt": "x"}))
        seen = ok(await client.call_tool("get_job", {"job": "seen"}))
        instructions = getattr(client, "instructions", None)
        return names, refused, seen, instructions

    names, refused, seen, _ = session(config_path, body, *flags)
    assert names == [entry.name for entry in TOOLS if not entry.writes]
    assert "submit_job: this watcherd MCP server is read-only" in refused
    assert "cancel_job" not in names
    assert seen["state"] == "queued"
    assert [p.name for p in (root / "inbox").iterdir()] == ["seen.yaml"]


def test_a_bad_mcp_setting_is_a_config_error(tmp_path: Path, root: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"root": str(root), "mcp": {"readonly": True}}))
    done = subprocess.run([sys.executable, "-m", "watcherd", "--config", str(config), "mcp"],
                          capture_output=True, text=True, env=cli_environ(), timeout=60,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 2
    assert "setting 'mcp': unknown key(s): readonly (allowed: read_only)" in done.stderr
    assert done.stdout == ""


# -- the README's snippets for hosts --------------------------------------------------------


def readme_servers() -> dict[str, dict[str, Any]]:
    """The server entries of the README's JSON snippets, by host."""
    readme = (CHECKOUT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Using watcherd from another agent", 1)[1].split("\n## ", 1)[0]
    found = {}
    for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL):
        data = json.loads(block)
        if "mcpServers" in data:
            found["claude"] = data["mcpServers"]["watcherd"]
        else:
            found["openclaw"] = data["mcp"]["servers"]["watcherd"]
    return found


@pytest.mark.parametrize("host", ["claude", "openclaw"])
def test_the_readme_snippets_start_this_server(host: str, root: Path, config_path: Path) -> None:
    entry = readme_servers()[host]
    assert entry["command"] == "watcherd" and entry["args"][-1] == "mcp"
    args = [str(root) if arg == "/srv/agent-work" else arg for arg in entry["args"]]
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "watcherd", *args], env=cli_environ()
    )

    async def run() -> list[str]:
        async with Client(params) as client:
            return [tool.name for tool in (await client.list_tools()).tools]

    assert anyio.run(run) == [entry.name for entry in TOOLS]


# -- cancel_job -----------------------------------------------------------------------------


def test_cancel_job_asks_once_and_never_touches_an_ended_job(root: Path, config_path: Path) -> None:
    (root / "inbox" / "later.yaml").write_text(f"repo_url: {REPO}\nprompt: fix it\n")
    (root / "inbox" / "finished.yaml").write_text(f"repo_url: {REPO}\nprompt: fix it\n")
    finish(root, claim(root, "finished.yaml"))

    async def body(client: Session) -> tuple[dict[str, Any], ...]:
        first = ok(await client.call_tool("cancel_job", {"job": "later"}))
        again = ok(await client.call_tool("cancel_job", {"job": "later"}))
        ended = ok(await client.call_tool("cancel_job", {"job": "finished"}))
        unknown = error(await client.call_tool("cancel_job", {"job": "nothing-here"}))
        return first, again, ended, {"unknown": unknown}

    first, again, ended, unknown = session(config_path, body)
    assert (first["answer"], again["answer"]) == ("requested", "already requested")
    assert ended["answer"] == "ended" and ended["state"] == "done"
    assert "no job 'nothing-here'" in unknown["unknown"]
    requests = list((root / "cancel").glob("queued-*.json"))
    assert len(requests) == 1 and json.loads(requests[0].read_text())["by"].endswith("(mcp)")
