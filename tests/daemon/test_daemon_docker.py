"""The daemon end to end on a real Docker Engine, with the stand-in worker image."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.backends import expected_binds, job_binds, on_both_backends
from tests.support.helpers import (
    StartDaemon,
    exit_record,
    finished_jobs,
    wait_finished,
    wait_for,
    write_job,
)
from tests.support.token_endpoint import TokenEndpoint
from watcherd.agents.codex_login import TOKEN_URL_ENV

pytestmark = pytest.mark.docker
URL = ""  # a local repository, set for every test by use_local_repo


@pytest.fixture(autouse=True)
def use_local_repo(repo_url: str) -> None:
    global URL
    URL = repo_url


def job(inbox: Path, name: str, prompt: str, **fields: Any) -> Path:
    return write_job(inbox, name, repo_url=URL, prompt=prompt, **fields)


@on_both_backends
def test_success_keeps_worker_fields_and_removes_container(
    work_root: Path, start_daemon: StartDaemon, docker_client: docker.DockerClient
) -> None:
    start_daemon()
    job(work_root / "inbox", "ok.yaml", "succeed")
    folder, path = wait_finished(work_root, "ok.yaml")
    record = exit_record(work_root, path)
    assert folder == "done"
    assert record["state"] == "done"
    assert record["attempts"] == 1
    assert record["exit_code"] == 0
    assert record["agent_version"] == "behave"  # what the worker may report is kept
    assert record["branch"] == f"watcherd/{record['job_id']}"  # the rest is the daemon's
    assert record["started_at"] and record["finished_at"]
    assert yaml_bytes_kept(path, prompt="succeed")
    wait_for(
        lambda: (
            not docker_client.containers.list(
                ignore_removed=True, all=True, filters={"label": f"watcherd.root={work_root}"}
            )
        ),
        10,
        "container removed",
    )


def out_dir(root: Path, job_file: Path) -> Path:
    return root / "out" / job_file.name.removesuffix(".yaml")


def running_file(root: Path, name: str) -> Path | None:
    """``name`` in the out/ folder of the (one) job in running/, once it exists."""
    for path in (root / "running").glob("*.yaml"):
        candidate = out_dir(root, path) / name
        if candidate.exists():
            return candidate
    return None


def yaml_bytes_kept(path: Path, prompt: str) -> bool:
    return f"prompt: {prompt}" in path.read_text()


@on_both_backends
def test_an_agent_failure_is_not_retried_and_a_kill_from_outside_is(
    work_root: Path, start_daemon: StartDaemon
) -> None:
    start_daemon()
    job(work_root / "inbox", "bad.yaml", "fail")
    folder, path = wait_finished(work_root, "bad.yaml")
    record = exit_record(work_root, path)
    assert (folder, record["state"], record["attempts"]) == ("failed", "failed", 1)
    assert "worker exited with code 3" in record["reason"]
    # Killed by a signal that was neither its timeout nor the OOM killer (an Engine
    # restart, a docker stop): another attempt, within its retries.
    job(work_root / "inbox", "killed.yaml", "crash", retries=1)
    folder, path = wait_finished(work_root, "killed.yaml")
    record = exit_record(work_root, path)
    assert (folder, record["state"], record["attempts"]) == ("failed", "failed", 2)
    assert "stopped from outside (worker killed by signal 9)" in record["reason"]


@pytest.mark.parametrize(
    ("prompt", "state", "reason"),
    [("fail", "failed", "worker exited with code 3")],
)
def test_failures_are_not_retried(
    work_root: Path, start_daemon: StartDaemon, prompt: str, state: str, reason: str
) -> None:
    start_daemon()
    job(work_root / "inbox", "bad.yaml", prompt)
    folder, path = wait_finished(work_root, "bad.yaml")
    record = exit_record(work_root, path)
    assert (folder, record["state"], record["attempts"]) == ("failed", state, 1)
    assert reason in record["reason"]


@on_both_backends
def test_missing_image_fails_the_job_with_the_reason(
    work_root: Path, start_daemon: StartDaemon
) -> None:
    start_daemon(image="watcherd-test-missing:nothing")
    job(work_root / "inbox", "noimage.yaml", "succeed")
    folder, path = wait_finished(work_root, "noimage.yaml")
    record = exit_record(work_root, path)
    assert (folder, record["state"], record["attempts"]) == ("failed", "failed", 1)
    assert "could not start the container" in record["reason"]
    assert "watcherd-test-missing" in record["reason"]
    assert record["exit_code"] is None


def test_codex_login_jobs_share_the_login_and_run_beside_the_other_agents(
    work_root: Path, start_daemon: StartDaemon, docker_client: docker.DockerClient, behave: str
) -> None:
    """The default auth mode (Codex's login, one dir): the daemon keeps the login, so two
    Codex jobs use it at once, beside jobs of the other agents; only the slots count."""
    others = ("opencode", "claude", "gemini")
    start_daemon(
        auth_mode=None, concurrency=5, agents={agent: {"image": behave} for agent in others}
    )
    inbox = work_root / "inbox"
    job(inbox, "codex-1.yaml", "hang", repo_dir="c1", timeout=300)
    job(inbox, "codex-2.yaml", "hang", repo_dir="c2", timeout=300)
    for agent in others:
        job(inbox, f"{agent}.yaml", "hang", agent=agent, repo_dir=agent, timeout=300)

    def running_agents() -> list[str]:
        label = {"label": f"watcherd.root={work_root}"}
        agents = []
        for container in docker_client.containers.list(ignore_removed=True, filters=label):
            env = dict(v.split("=", 1) for v in container.attrs["Config"]["Env"])
            agents.append(env["WATCHERD_AGENT"])
        return sorted(agents)

    everyone = ["claude", "codex", "codex", "gemini", "opencode"]
    wait_for(lambda: running_agents() == everyone, 60, "5 at once")
    assert len(finished_jobs(work_root)["running"]) == 5
    assert (work_root / ".codex-bot").stat().st_mode & 0o777 == 0o700


@on_both_backends
def test_timeout_kills_the_container(work_root: Path, start_daemon: StartDaemon) -> None:
    start_daemon()
    job(work_root / "inbox", "slow.yaml", "hang", timeout=2)
    folder, path = wait_finished(work_root, "slow.yaml", timeout=30)
    record = exit_record(work_root, path)
    assert (folder, record["state"]) == ("failed", "timeout")
    assert "timed out after 2s" in record["reason"]


@on_both_backends
def test_transient_failure_is_retried_then_succeeds(
    work_root: Path, start_daemon: StartDaemon
) -> None:
    start_daemon()
    job(work_root / "inbox", "flaky.yaml", "transient-once")
    folder, path = wait_finished(work_root, "flaky.yaml")
    record = exit_record(work_root, path)
    assert (folder, record["state"], record["attempts"]) == ("done", "done", 2)


def test_transient_failures_give_up_after_the_retries(
    work_root: Path, start_daemon: StartDaemon
) -> None:
    start_daemon()
    job(work_root / "inbox", "flaky.yaml", "transient-once", retries=0)
    folder, path = wait_finished(work_root, "flaky.yaml")
    record = exit_record(work_root, path)
    assert (folder, record["attempts"]) == ("failed", 1)
    assert "gave up after 1 attempt(s): network failure" in record["reason"]


def test_bad_input_is_failed_with_reason_and_daemon_keeps_serving(
    work_root: Path, start_daemon: StartDaemon, docker_client: docker.DockerClient
) -> None:
    daemon = start_daemon()
    inbox = work_root / "inbox"
    (inbox / "syntax.yaml").write_bytes(b"repo_url: [oops\n")
    (inbox / "binary.yaml").write_bytes(os.urandom(512) + b"\xff")
    os.symlink("/etc/passwd", inbox / "passwd.yaml")
    (inbox / "dir.yaml").mkdir()
    os.mkfifo(inbox / "fifo.yaml")
    (inbox / "notes.txt").write_text("not a job")
    originals = {"syntax.yaml": b"repo_url: [oops\n"}
    for name in ("syntax.yaml", "binary.yaml", "passwd.yaml", "dir.yaml", "fifo.yaml"):
        folder, path = wait_finished(work_root, name)
        assert folder == "failed"
        record = exit_record(work_root, path)
        assert record["state"] == "invalid"
        assert name in record["reason"]
        if name in originals:
            assert path.read_bytes() == originals[name]
    assert (inbox / "notes.txt").exists()
    job(inbox, "after.yaml", "succeed")
    assert wait_finished(work_root, "after.yaml")[0] == "done"
    assert daemon.alive()
    events = docker_client.events(
        since=int(time.time()) - 60, until=int(time.time()) + 1, decode=True,
        filters={"type": "container", "event": "create", "label": f"watcherd.root={work_root}"},
    )  # fmt: skip
    assert len(list(events)) == 1  # only the valid job got a container


def test_slow_writer_is_never_claimed_early(work_root: Path, start_daemon: StartDaemon) -> None:
    start_daemon()
    # Valid only once complete: the prompt comes last.
    content = f"repo_url: {URL}\n# {'x' * 60}\nprompt: succeed\n".encode()
    with (work_root / "inbox" / "slow.yaml").open("wb") as handle:
        for byte in content:  # one byte every 10 ms
            handle.write(bytes([byte]))
            handle.flush()
            time.sleep(0.01)
    folder, path = wait_finished(work_root, "slow.yaml")
    assert folder == "done", exit_record(work_root, path)["reason"]
    assert path.read_bytes() == content


def test_files_held_open_by_their_writers_never_starve_the_jobs_behind_them(
    work_root: Path, start_daemon: StartDaemon
) -> None:
    inbox = work_root / "inbox"
    inbox.mkdir()
    held = []
    for n in range(40):  # older than the job, each still open for writing
        handle = (inbox / f"held-{n:02d}.yaml").open("w")
        handle.write(f"repo_url: {URL}\nprompt: succeed\n")
        handle.flush()
        held.append(handle)
    try:
        start_daemon(concurrency=1, settle_seconds=0.05)
        job(inbox, "behind.yaml", "succeed")
        folder, _ = wait_finished(work_root, "behind.yaml", timeout=30)
        assert folder == "done"
        assert len(list(inbox.glob("held-*.yaml"))) == 40  # none claimed while open
    finally:
        for handle in held:
            handle.close()
    # Closed, they are jobs like any other: claimed in turn.
    wait_for(lambda: not list(inbox.glob("held-*.yaml")), 60, "the held ones claimed once closed")


@on_both_backends
def test_daemon_killed_mid_run_adopts_the_container(
    work_root: Path, start_daemon: StartDaemon, docker_client: docker.DockerClient
) -> None:
    daemon = start_daemon()
    job(work_root / "inbox", "long.yaml", "count-and-sleep 4", repo_dir="long")
    starts = wait_for(lambda: running_file(work_root, "starts"), 30, "container started")
    daemon.kill()
    assert finished_jobs(work_root)["running"]
    restarted = start_daemon()
    folder, path = wait_finished(work_root, "long.yaml", timeout=60)
    assert folder == "done"
    lines = starts.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["start", "end"]  # started once
    assert "adopting its container" in restarted.log()
    assert exit_record(work_root, path)["attempts"] == 1


def test_jobs_on_one_repository_run_at_the_same_time_on_their_own_workspaces(
    work_root: Path, start_daemon: StartDaemon
) -> None:
    start_daemon(concurrency=2)
    inbox = work_root / "inbox"
    for name in ("one.yaml", "two.yaml"):
        job(inbox, name, "count-and-sleep 2", repo_dir="shared")
    spans, branches = [], set()
    for name in ("one.yaml", "two.yaml"):
        folder, path = wait_finished(work_root, name)
        assert folder == "done"
        marks = (out_dir(work_root, path) / "starts").read_text().split()
        spans.append((int(marks[1]), int(marks[3])))
        branches.add(exit_record(work_root, path)["branch"])
    (_, first_end), (second_start, _) = sorted(spans)
    assert second_start < first_end  # they overlapped
    assert len(branches) == 2


@on_both_backends
def test_two_daemons_on_one_inbox_run_each_job_once(
    work_root: Path, start_daemon: StartDaemon
) -> None:
    start_daemon()
    start_daemon()
    inbox = work_root / "inbox"
    names = [f"race{i:02d}.yaml" for i in range(12)]
    for name in names:
        job(inbox, name, "count-and-sleep 0.1", repo_dir=name.removesuffix(".yaml"))
    wait_for(lambda: len(finished_jobs(work_root)["done"]) == len(names), 120, "all jobs done")
    assert finished_jobs(work_root)["failed"] == []
    for name in names:
        _, path = wait_finished(work_root, name)
        assert (out_dir(work_root, path) / "starts").read_text().count("start") == 1


def test_engine_down_at_first(work_root: Path, start_daemon: StartDaemon, tmp_path: Path) -> None:
    proxy_path = tmp_path / "engine.sock"
    daemon = start_daemon(wait_ready=False, docker_host=f"unix://{proxy_path}")
    wait_for(lambda: "waiting for the Docker Engine" in daemon.log(), 30, "daemon waiting")
    job(work_root / "inbox", "early.yaml", "succeed")
    time.sleep(0.5)  # the job must stay put while there is no Engine
    assert finished_jobs(work_root)["inbox"] == ["early.yaml"]
    with unix_proxy(proxy_path, Path("/var/run/docker.sock")):
        folder, _ = wait_finished(work_root, "early.yaml", timeout=60)
        assert folder == "done"
        daemon.stop()


@on_both_backends
def test_engine_lost_mid_job_is_waited_for_and_the_container_adopted(
    work_root: Path, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    proxy_path = tmp_path / "engine.sock"
    with unix_proxy(proxy_path, Path("/var/run/docker.sock")):
        daemon = start_daemon(docker_host=f"unix://{proxy_path}")
        job(work_root / "inbox", "steady.yaml", "count-and-sleep 3", repo_dir="steady")
        starts = wait_for(lambda: running_file(work_root, "starts"), 30, "container started")
    wait_for(lambda: "waiting for the Engine" in daemon.log(), 30, "daemon noticing")
    with unix_proxy(proxy_path, Path("/var/run/docker.sock")):
        folder, path = wait_finished(work_root, "steady.yaml", timeout=60)
        daemon.stop()
    assert folder == "done"
    assert exit_record(work_root, path)["attempts"] == 1
    assert starts.read_text().count("start") == 1


def test_job_container_is_hardened(
    work_root: Path, start_daemon: StartDaemon, docker_client: docker.DockerClient
) -> None:
    start_daemon(memory_limit="512m", pids_limit=64)
    job(work_root / "inbox", "inspect.yaml", "hang", repo_dir="widgets")
    container = wait_for(
        lambda: docker_client.containers.list(
            ignore_removed=True, filters={"label": f"watcherd.root={work_root}"}
        ),
        30, "container running",
    )[0]  # fmt: skip
    host = container.attrs["HostConfig"]
    assert container.attrs["Config"]["User"] == "1000:1000"
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True
    assert host["Privileged"] is False
    assert host["PidsLimit"] == 64
    assert host["Memory"] == 512 * 1024**2
    assert host["NetworkMode"] == "none"
    job_id = container.labels["watcherd.job"]
    mounts = container.attrs["Mounts"]
    assert len(mounts) == 5 and job_binds(container) == expected_binds(work_root, job_id, "widgets")
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-file": "2", "max-size": "10485760"},
    }
    assert "/var/run/docker.sock" not in str(container.attrs)
    assert container.name == f"watcherd-{container.labels['watcherd.job']}"


class unix_proxy:
    """Forward a unix socket to another: an Engine that appears late or goes away."""

    def __init__(self, listen: Path, target: Path) -> None:
        self.listen, self.target = listen, target
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.connections: list[socket.socket] = []

    def __enter__(self) -> unix_proxy:
        self.listen.unlink(missing_ok=True)
        self.server.bind(str(self.listen))
        self.server.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        """The Engine vanishes: no new connections, and open ones are cut."""
        self.server.close()
        for sock in self.connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(str(self.target))
            self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def orphan(root: Path, job_id: str, prompt: str, attempts: int) -> None:
    """A job a dead daemon had claimed, with no container left."""
    for folder in ("running", "state"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "running" / f"{job_id}.yaml").write_text(f"repo_url: {URL}\nprompt: {prompt}\n")
    (root / "state" / f"{job_id}.json").write_text(
        json.dumps({"attempts": attempts, "source_name": f"{job_id}.yaml"})
    )


@on_both_backends
def test_recovery_reruns_an_orphan_with_attempts_left_and_fails_one_without(
    work_root: Path, start_daemon: StartDaemon
) -> None:
    orphan(work_root, "20261126T000000Z-again-aaaaaa", "succeed", attempts=1)
    orphan(work_root, "20261126T000000Z-spent-bbbbbb", "succeed", attempts=3)
    start_daemon()
    folder, path = wait_finished(work_root, "20261126T000000Z-again-aaaaaa.yaml")
    assert (folder, exit_record(work_root, path)["attempts"]) == ("done", 2)
    folder, path = wait_finished(work_root, "20261126T000000Z-spent-bbbbbb.yaml")
    assert folder == "failed"
    assert "no attempts left (3 of 3 used)" in exit_record(work_root, path)["reason"]


def test_json_logs(work_root: Path, start_daemon: StartDaemon) -> None:
    daemon = start_daemon(log_format="json")
    job(work_root / "inbox", "logged.yaml", "succeed")
    wait_finished(work_root, "logged.yaml")
    daemon.stop()
    records = [json.loads(line) for line in daemon.log().splitlines()]
    assert any("claimed logged.yaml" in r["message"] for r in records)
    assert {"time", "level", "logger", "message"} <= set(records[0])


@on_both_backends
def test_a_worker_that_wedges_its_outputs_still_ends_with_a_regular_exit_json(
    work_root: Path, start_daemon: StartDaemon
) -> None:
    daemon = start_daemon()
    job(work_root / "inbox", "wedge.yaml", "wedge")
    folder, path = wait_finished(work_root, "wedge.yaml")
    out = out_dir(work_root, path)
    record = exit_record(work_root, path)
    assert (folder, record["state"]) == ("done", "done")
    removed = " ".join(record["removed_from_out"])
    for what in ("exit.json (directory)", "summary.md (symlink)", "events.jsonl (fifo)",
                 "run.log.link (symlink)", "sub/.git (directory)"):  # fmt: skip
        assert what in removed, (what, removed)
    assert (out / "exit.json").is_file() and not (out / "exit.json").is_symlink()
    assert not (out / "summary.md").exists()
    assert finished_jobs(work_root)["running"] == []
    assert daemon.alive()


def test_container_logs_are_capped(
    work_root: Path, start_daemon: StartDaemon, docker_client: docker.DockerClient
) -> None:
    start_daemon(log_max_size="1m")
    job(work_root / "inbox", "loud.yaml", "shout 30", timeout=20)
    container = wait_for(
        lambda: docker_client.containers.list(
            ignore_removed=True, filters={"label": f"watcherd.root={work_root}"}
        ),
        30, "container running",
    )[0]  # fmt: skip
    log_path = Path(container.attrs["LogPath"])
    logs = [log_path, log_path.with_name(log_path.name + ".1")]
    # 30 MB were printed; Docker keeps at most two files of 1 MB (plus JSON framing).
    wait_for(lambda: log_path.with_name(log_path.name + ".1").exists(), 30, "a log rotation")
    time.sleep(1)  # let the rest of the 30 MB arrive; the cap must hold at the end too
    assert sum(p.stat().st_size for p in logs if p.exists()) < 3 * 1024**2
    container.kill()


@on_both_backends
def test_an_oom_kill_of_any_process_fails_the_job_even_when_the_worker_exits_0(
    work_root: Path, start_daemon: StartDaemon
) -> None:
    start_daemon(memory_limit="64m")
    job(work_root / "inbox", "oom.yaml", "oom-child", retries=0)
    folder, path = wait_finished(work_root, "oom.yaml")
    record = exit_record(work_root, path)
    assert (folder, record["state"], record["exit_code"]) == ("failed", "failed", 0)
    assert "out of memory" in record["reason"]


def test_the_daemon_renews_a_stale_login_and_no_job_writes_it(
    work_root: Path, start_daemon: StartDaemon
) -> None:
    """A login 8 days old is renewed by the daemon before the job, once, against the
    operator's token endpoint; the job sees only its stand-in, and what it writes there
    (a rotation, another account) never reaches the login dir."""
    endpoint = TokenEndpoint(
        [(200, {"access_token": "at-canary-2", "refresh_token": "rt-canary-2"})]
    ).start()
    try:
        login = work_root / ".codex-bot"
        login.mkdir(mode=0o700)
        stale = {"last_refresh": "2026-11-20T00:00:00Z",
                 "tokens": {"access_token": "at-canary-1", "refresh_token": "rt-canary-1",
                            "account_id": "acct-1"}}  # fmt: skip
        (login / "auth.json").write_text(json.dumps(stale))
        start_daemon(auth_mode="login",
                     agents={"codex": {"env": {TOKEN_URL_ENV: endpoint.url}}})  # fmt: skip
        job(work_root / "inbox", "mark.yaml", "login-mark 0")
        folder, path = wait_finished(work_root, "mark.yaml")
        assert folder == "done"
        assert [r["refresh_token"] for r in endpoint.requests] == ["rt-canary-1"]
        renewed = json.loads((login / "auth.json").read_text())
        assert renewed["tokens"] == {"access_token": "at-canary-2", "refresh_token": "rt-canary-2",
                                     "account_id": "acct-1"}  # fmt: skip
        assert (login / "auth.json").stat().st_mode & 0o777 == 0o600
        seen = (out_dir(work_root, path) / "marks").read_text()
        assert "held-by-watcherd" in seen and "canary" not in seen

        for name, behaviour in (("rotate.yaml", "rotate-login"), ("poison.yaml", "poison-login")):
            job(work_root / "inbox", name, behaviour)
            assert wait_finished(work_root, name)[0] == "done"
        assert json.loads((login / "auth.json").read_text()) == renewed
        assert len(endpoint.requests) == 1  # fresh now: not renewed again
        assert not list((work_root / "homes").iterdir())
    finally:
        endpoint.stop()
