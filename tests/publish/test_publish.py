"""Publishing for real, without Docker: a git server over HTTP on 127.0.0.1 that takes
pushes (git http-backend) and a scripted GitHub API, jobs filed as the daemon files them.

Idempotence (twice: one push, one pull request), draft and ready, the token in no process's
arguments or environment and in no file under the root, hostile work refused before
anything goes out, and every way a forge says no."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.forge_api import App
from tests.support.git_http import GitHttpServer
from tests.support.publishing import REPO, World, files_holding, finished_job, git, make_world
from tests.support.webhook import Receiver
from watcherd.config.publish import PublishSettings
from watcherd.job.results import JobState
from watcherd.publish import publish_job

FAST = (0.05, 0.05, 0.05)  # retry pauses


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = make_world(tmp_path)
    yield made
    made.close()


def pushes(world: World) -> int:
    return world.git.pushes


def test_publish_twice_pushes_once_and_opens_one_pull_request(world: World) -> None:
    config = world.config()
    job_id = finished_job(world, config, commits=[{"README.md": "# widgets\n"}],
                          branch="fix-readme")  # fmt: skip
    first = publish_job(config, job_id, "draft", pauses=FAST)
    assert first["state"] == "published", (first["reason"], world.git.refusals)
    assert first["branch"] == "watcherd/fix-readme"
    assert first["pushed"] is True and first["draft"] is True and first["number"] == 1
    assert world.remote_branch("watcherd/fix-readme") == first["commit"]
    assert pushes(world) == 1
    [pull] = world.api.open_pulls(REPO)
    assert pull["head"]["ref"] == "watcherd/fix-readme" and pull["base"]["ref"] == "main"
    assert pull["title"] == "Fix the README" and pull["draft"] is True
    assert "It said demo." in pull["body"] and job_id in pull["body"]

    again = publish_job(config, job_id, "draft", pauses=FAST)
    assert again["state"] == "published" and again["pushed"] is False
    assert again["url"] == first["url"]
    assert pushes(world) == 1  # nothing new went out
    assert len(world.api.pulls[REPO]) == 1
    assert not any(seen.method == "PATCH" for seen in world.api.seen)  # nothing changed

    ready = publish_job(config, job_id, "ready", pauses=FAST)
    assert ready["state"] == "published" and ready["draft"] is False
    assert world.api.open_pulls(REPO)[0]["draft"] is False
    assert len(world.api.pulls[REPO]) == 1 and pushes(world) == 1
    # Not asked how, with nothing recorded (publish_job writes nothing) and the job's
    # publish: none: nothing to do.
    assert publish_job(config, job_id, None, pauses=FAST)["state"] == "skipped"


def test_branch_mode_pushes_without_a_pull_request_and_the_default_name(world: World) -> None:
    config = world.config(branch_prefix="bots/")
    job_id = finished_job(world, config, commits=[{"NEW.md": "x\n"}], publish="branch")
    outcome = publish_job(config, job_id, None, pauses=FAST)
    assert outcome["state"] == "pushed", outcome
    assert outcome["branch"] == f"bots/{job_id}"
    assert outcome["url"].endswith(f"/acme/widgets/tree/bots/{job_id}")
    assert world.remote_branch(f"bots/{job_id}") == outcome["commit"]
    assert world.api.pulls[REPO] == []


def test_a_base_branch_is_the_pull_requests_base(world: World) -> None:
    config = world.config()
    job_id = finished_job(world, config, commits=[{"F.md": "f\n"}], repo_ref="feature")
    outcome = publish_job(config, job_id, "draft", pauses=FAST)
    assert outcome["state"] == "published" and outcome["base"] == "feature", outcome


def test_the_token_is_in_no_process_file_or_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = make_world(tmp_path, push_delay=1.0)  # pushes stay open long enough to look
    try:
        caplog.set_level(logging.DEBUG)
        config = world.config()
        job_id = finished_job(world, config, commits=[{"README.md": "# widgets\n"}])
        sampler = ProcessSampler(world.token)
        with sampler:
            outcome = publish_job(config, job_id, "draft", pauses=FAST)
        assert outcome["state"] == "published", outcome
        assert sampler.git_seen, "no git process was running while the sampler looked"
        assert sampler.leaks == []
        # The credential went to the git server once per git command (ls-remote, push)
        # and only as Basic auth for receive-pack; fetches carried none.
        assert all(seen.authorization is None for seen in world.git.seen
                   if "upload-pack" in seen.path)  # fmt: skip
        assert not files_holding(world.root, world.token)
        assert world.token not in caplog.text
        assert world.token not in str(outcome)
    finally:
        world.close()


class ProcessSampler:
    """Looks at every process's arguments and environment (/proc) until stopped."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.leaks: list[str] = []
        self.git_seen = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = str(os.getpid())
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == me:
                    continue  # this test process holds the token, as the daemon would
                for what in ("cmdline", "environ"):
                    try:
                        data = Path(f"/proc/{pid}/{what}").read_bytes()
                    except OSError:
                        continue
                    if what == "cmdline" and data.startswith(b"git\0"):
                        self.git_seen = True
                    if self.secret in data:
                        self.leaks.append(f"{pid} {what}: {data[:200]!r}")
            time.sleep(0.01)


# -- hostile work: refused before anything goes out ---------------------------------------


def nothing_went_out(world: World) -> bool:
    return world.git.pushes == 0 and world.git.refused_pushes == 0 and not world.api.seen


def test_a_commit_changing_a_workflow_is_refused(world: World) -> None:
    config = world.config()
    job_id = finished_job(world, config, commits=[
        {"README.md": "ok\n"},
        {".github/workflows/ci.yml": "on: push\njobs: {x: {runs-on: ubuntu-latest}}\n"},
        {".github/workflows/ci.yml": None},  # taken out again: it was pushed all the same
    ])  # fmt: skip
    outcome = publish_job(config, job_id, "draft", pauses=FAST)
    assert outcome["state"] == "refused"
    assert ".github/workflows/ci.yml" in outcome["reason"]
    assert nothing_went_out(world)
    # The operator may allow it, for its repository.
    allowed = world.config(repos=[{"match": world.repo_url, "allow_protected_paths": True}])
    assert publish_job(allowed, job_id, "draft", pauses=FAST)["state"] == "published"


def test_other_ci_paths_are_protected_whatever_their_case(world: World) -> None:
    config = world.config()
    for path in (".GitHub/Workflows/x.yml", ".gitlab-ci.yml", "Jenkinsfile", ".circleci/c.yml"):
        job_id = finished_job(world, config, commits=[{path: "x\n"}])
        outcome = publish_job(config, job_id, "draft", pauses=FAST)
        assert outcome["state"] == "refused" and path in outcome["reason"], outcome
    assert nothing_went_out(world)


@pytest.mark.parametrize("branch", ["main", "feature"])
def test_a_branch_naming_the_default_branch_or_the_base_is_refused(
    world: World, branch: str
) -> None:
    # With no prefix the job's branch: would be the remote's branch itself.
    config = world.config(branch_prefix="", protected_branches=[])
    job_id = finished_job(world, config, commits=[{"README.md": "mine\n"}], branch=branch,
                          repo_ref="feature")  # fmt: skip
    outcome = publish_job(config, job_id, "ready", pauses=FAST)
    assert outcome["state"] == "refused", outcome
    assert f"branch {branch!r} is" in outcome["reason"]
    assert world.git.pushes == 0
    assert world.remote_branch("main") == git("--git-dir", str(world.upstream), "rev-parse",
                                              "main~0")  # fmt: skip


def test_a_branch_named_main_is_refused_under_a_prefix_too(world: World) -> None:
    config = world.config()  # branch_prefix watcherd/: it would be watcherd/main
    job_id = finished_job(world, config, commits=[{"README.md": "mine\n"}], branch="main")
    outcome = publish_job(config, job_id, "draft", pauses=FAST)
    assert outcome["state"] == "refused" and "'main' is" in outcome["reason"]
    assert nothing_went_out(world)


def test_a_protected_branch_pattern_is_refused(world: World) -> None:
    config = world.config(branch_prefix="", protected_branches=["release/*"])
    job_id = finished_job(world, config, commits=[{"R.md": "r\n"}], branch="release/2.0")
    outcome = publish_job(config, job_id, "draft", pauses=FAST)
    assert outcome["state"] == "refused" and "protected" in outcome["reason"]
    assert nothing_went_out(world)


def test_rewritten_history_is_refused(world: World) -> None:
    config = world.config()
    job_id = finished_job(world, config, commits=[{"README.md": "all new\n"}], orphan=True)
    outcome = publish_job(config, job_id, "draft", pauses=FAST)
    assert outcome["state"] == "refused"
    assert "does not descend from commit_before" in outcome["reason"]
    assert nothing_went_out(world)


def test_size_bounds(world: World) -> None:
    many = world.config(max_commits=2)
    job_id = finished_job(world, many, commits=[{"a": "1"}, {"a": "2"}, {"a": "3"}])
    outcome = publish_job(many, job_id, "draft", pauses=FAST)
    assert outcome["state"] == "refused" and "3 commits" in outcome["reason"]
    big = world.config(max_bytes="1k")
    job_id = finished_job(world, big, commits=[{"big.txt": "x" * 5000}])
    outcome = publish_job(big, job_id, "draft", pauses=FAST)
    assert outcome["state"] == "refused" and "max_bytes" in outcome["reason"]
    assert nothing_went_out(world)


def test_nothing_to_publish_and_a_job_not_done_are_skipped(world: World) -> None:
    config = world.config()
    idle = finished_job(world, config, commits=None)
    assert publish_job(config, idle, "draft")["reason"] == (
        "the job made no commits: nothing to publish"
    )
    failed = finished_job(world, config, commits=[{"a": "1"}], state=JobState.TIMEOUT)
    outcome = publish_job(config, failed, "draft")
    assert outcome["state"] == "skipped" and "ended timeout" in outcome["reason"]
    assert nothing_went_out(world)


# -- the forge says no ---------------------------------------------------------------------


def test_a_refused_credential_fails_the_publish_with_the_reason(world: World) -> None:
    config = world.config()
    job_id = finished_job(world, config, commits=[{"a": "1"}])
    world.api.queue("GET", "/repos/acme/widgets", 401, {"message": "Bad credentials"})
    outcome = publish_job(config, job_id, "draft", pauses=FAST)
    assert outcome["state"] == "failed" and outcome["attempts"] == 1
    assert "refused the credential" in outcome["reason"] and "Bad credentials" in outcome["reason"]
    assert world.git.pushes == 0


def test_403_and_422_are_final(world: World) -> None:
    config = world.config()
    job_id = finished_job(world, config, commits=[{"a": "1"}])
    world.api.queue("GET", "/repos/acme/widgets", 403,
                    {"message": "Resource not accessible by personal access token"})  # fmt: skip
    outcome = publish_job(config, job_id, "draft", pauses=FAST)
    assert outcome["state"] == "failed" and "may not do this" in outcome["reason"]
    said = {"message": "Validation Failed", "errors": [{"message": "No commits between a and b"}]}
    world.api.queue("POST", "/repos/acme/widgets/pulls", 422, said)
    outcome = publish_job(config, job_id, "draft", pauses=FAST)
    assert outcome["state"] == "failed" and "No commits between" in outcome["reason"]
    assert outcome["pushed"] is True  # the branch went out; the pull request did not
    assert publish_job(config, job_id, "draft", pauses=FAST)["state"] == "published"
    assert world.git.pushes == 1


def test_a_5xx_is_retried_within_bounds(world: World) -> None:
    config = world.config(retries=2)
    job_id = finished_job(world, config, commits=[{"a": "1"}])
    world.api.queue("GET", "/repos/acme/widgets", 502, {"message": "Bad Gateway"})
    outcome = publish_job(config, job_id, "draft", pauses=FAST)
    assert outcome["state"] == "published" and outcome["attempts"] == 2
    other = finished_job(world, config, "other.yaml", commits=[{"b": "1"}])
    world.api.queue("GET", "/repos/acme/widgets", 503, {"message": "down"}, times=10)
    outcome = publish_job(config, other, "draft", pauses=FAST)
    assert outcome["state"] == "failed" and outcome["attempts"] == 3
    assert "HTTP 503" in outcome["reason"] and "gave up" in outcome["reason"]


def test_a_redirect_to_another_host_is_not_followed(world: World) -> None:
    elsewhere = Receiver()
    try:
        config = world.config()
        job_id = finished_job(world, config, commits=[{"a": "1"}])
        there = f"{elsewhere.url.rsplit('/', 1)[0]}/repos/acme/widgets"
        world.api.queue("GET", "/repos/acme/widgets", 301, None, {"Location": there})
        outcome = publish_job(config, job_id, "draft", pauses=FAST)
        assert outcome["state"] == "failed" and "not followed" in outcome["reason"]
        assert elsewhere.requests == []  # nothing, and so no credential, went there
        assert world.git.pushes == 0
    finally:
        elsewhere.stop()


def test_a_git_server_that_redirects_a_push_gets_no_credential(
    tmp_path: Path, world: World
) -> None:
    # The push URL answers with a redirect to another server (which would take the
    # push): git must neither follow it nor send the credential there.
    other = GitHttpServer(tmp_path / "served", "x-access-token", {world.token})
    try:
        config = world.config(retries=0)
        job_id = finished_job(world, config, commits=[{"a": "1"}])
        world.git.redirect_pushes = f"http://{other.host}"
        outcome = publish_job(config, job_id, "draft", pauses=FAST)
        assert outcome["state"] == "failed", outcome
        assert other.seen == [] and other.pushes == 0
        assert all(seen.authorization is None for seen in world.git.seen)
    finally:
        other.close()


def test_a_credential_file_others_can_read_is_refused(world: World) -> None:
    config = world.config()
    job_id = finished_job(world, config, commits=[{"a": "1"}])
    world.token_file.chmod(0o644)
    outcome = publish_job(config, job_id, "draft", pauses=FAST)
    assert outcome["state"] == "failed" and "chmod 600" in outcome["reason"]
    assert world.token not in outcome["reason"]
    world.token_file.unlink()
    outcome = publish_job(config, job_id, "draft", pauses=FAST)
    assert outcome["state"] == "failed" and "cannot read" in outcome["reason"]
    assert nothing_went_out(world)


def test_a_repository_with_no_forge_is_refused(world: World) -> None:
    config = world.config()
    job_id = finished_job(world, config, commits=[{"a": "1"}])
    # The config has lost its forge since (the job itself asked for nothing, so its file
    # still passes): a request to publish it finds no forge, so no credential either.
    bare = config.replace(publish=PublishSettings())
    outcome = publish_job(bare, job_id, "draft")
    assert outcome["state"] == "refused"
    assert "no forge is configured for 127.0.0.1:" in outcome["reason"], outcome
    assert nothing_went_out(world)


# -- leases: only the daemon's own last push is ever overwritten -----------------------------


def test_someone_elses_commits_on_the_branch_are_never_overwritten(world: World) -> None:
    config = world.config()
    job_id = finished_job(world, config, commits=[{"a": "1"}], branch="shared")
    assert publish_job(config, job_id, "draft", pauses=FAST)["state"] == "published"
    # A person pushes a commit on top of the published branch.
    human = world.tmp / "human"
    git("clone", "-q", "-b", "watcherd/shared", str(world.upstream), str(human))
    (human / "b").write_text("mine\n")
    git("add", "b", cwd=human)
    git("-c", "user.name=h", "-c", "user.email=h@x", "commit", "-qm", "human", cwd=human)
    git("push", "-q", "origin", "watcherd/shared", cwd=human)
    theirs = world.remote_branch("watcherd/shared")
    # A later job reuses the branch name with other work: not a fast-forward of theirs.
    later = finished_job(world, config, "later.yaml", commits=[{"c": "2"}], branch="shared")
    outcome = publish_job(config, later, "draft", pauses=FAST)
    assert outcome["state"] == "failed" and "not overwritten" in outcome["reason"], outcome
    assert world.remote_branch("watcherd/shared") == theirs


def test_the_daemons_own_last_push_is_replaced_with_a_lease(world: World) -> None:
    config = world.config()
    job_id = finished_job(world, config, commits=[{"a": "1"}], branch="again")
    first = publish_job(config, job_id, "draft", pauses=FAST)
    later = finished_job(world, config, "later.yaml", commits=[{"c": "2"}], branch="again")
    outcome = publish_job(config, later, "draft", pauses=FAST)
    assert outcome["state"] == "published" and outcome["pushed"] is True, outcome
    assert world.remote_branch("watcherd/again") == outcome["commit"] != first["commit"]
    assert len(world.api.pulls[REPO]) == 1  # the same pull request, its body updated
    assert later in world.api.pulls[REPO][0]["body"]


# -- a GitHub App -----------------------------------------------------------------------------


def test_a_github_app_mints_a_token_for_the_one_repository(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    private, public = keys / "app.pem", keys / "app.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(private)], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run(["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)],
                   check=True, capture_output=True)  # fmt: skip
    private.chmod(0o600)
    world = make_world(tmp_path / "w", app=App("31337", public))
    try:
        forge = {"token_file": None, "app_id": 31337, "app_key_file": str(private)}
        config = world.config(forge=forge)
        job_id = finished_job(world, config, commits=[{"a": "1"}])
        outcome = publish_job(config, job_id, "ready", pauses=FAST)
        assert outcome["state"] == "published", outcome
        [minted] = world.api.installation_tokens
        assert minted["asked"]["repositories"] == ["widgets"]
        assert minted["asked"]["permissions"] == {"contents": "write", "pull_requests": "write"}
        assert world.git.pushes == 1 and world.remote_branch(outcome["branch"])
        assert not files_holding(world.root, minted["token"])
        # A private key others can read is refused like a token file.
        private.chmod(0o640)
        other = finished_job(world, config, "other.yaml", commits=[{"b": "1"}])
        outcome = publish_job(config, other, "ready", pauses=FAST)
        assert outcome["state"] == "failed" and "chmod 600" in outcome["reason"]
    finally:
        world.close()
