"""A corpus of hostile and malformed job files through a real daemon.

Each must end in failed/ with its original bytes and a reason naming the
problem, without a container being started, while the daemon keeps serving.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from tests.support.git_server import GitServer
from tests.support.helpers import DaemonProcess, exit_record, wait_finished, write_job

pytestmark = pytest.mark.docker
OK = "repo_url: https://example.invalid/acme/w.git\nprompt: succeed\n"


def with_key(line: str) -> bytes:
    return (OK + line + "\n").encode()


def alias_bomb() -> bytes:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, name = chr(96 + i), chr(97 + i)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return ("\n".join(lines) + "\n").encode()


# name -> (bytes, words the reason must contain)
CORPUS: dict[str, tuple[bytes, str]] = {
    "syntax.yaml": (b"repo_url: [unclosed\nprompt: x\n", "YAML syntax error"),
    "tabs.yaml": (b"repo_url:\n\t- x\n", "YAML syntax error"),
    "bomb.yaml": (alias_bomb(), "aliases"),
    "list.yaml": (b"- repo_url: x\n", "expected a mapping"),
    "scalar.yaml": (b"hello\n", "expected a mapping"),
    "empty.yaml": (b"", "the file is empty"),
    "multidoc.yaml": ((OK + "---\n" + OK).encode(), "YAML syntax error"),
    "huge.yaml": (b"# " + b"x" * (10 * 1024 * 1024) + b"\n", "limited to 65536"),
    "garbage.yaml": (bytes(range(256)) * 4, "NUL bytes"),
    "latin1.yaml": ("prompt: caf\u00e9\n".encode("latin-1"), "not UTF-8"),
    "nul.yaml": (OK.encode() + b"\x00", "NUL bytes"),
    "no-url.yaml": (b"prompt: x\n", "repo_url: required"),
    "no-prompt.yaml": (b"repo_url: https://h/a/b\n", "prompt: required"),
    "empty-prompt.yaml": (b"repo_url: https://h/a/b\nprompt: ''\n", "prompt: must not be empty"),
    "unknown-key.yaml": (with_key("privileged: true"), "unknown key(s): privileged"),
    "url-int.yaml": (b"repo_url: 42\nprompt: x\n", "repo_url: expected a string"),
    "prompt-list.yaml": (b"repo_url: https://h/a/b\nprompt: [x]\n", "prompt: expected a string"),
    "ref-int.yaml": (with_key("repo_ref: 1.5"), "repo_ref: expected a string"),
    "dir-list.yaml": (with_key("repo_dir: [x]"), "repo_dir: expected a string"),
    "mode-int.yaml": (with_key("mode: 1"), "mode: expected one of"),
    "flags-map.yaml": (with_key("flags: {a: b}"), "flags: expected a list"),
    "flags-ints.yaml": (with_key("flags: [1, 2]"), "flags: expected a list"),
    "model-list.yaml": (with_key("model: [x]"), "model: expected a string"),
    "timeout-list.yaml": (with_key("timeout: [1]"), "timeout: expected seconds"),
    "env-list.yaml": (with_key("env: [A]"), "env: expected a mapping"),
    "env-nested.yaml": (with_key("env: {A: {b: c}}"), "env: A: expected a string"),
    "retries-str.yaml": (with_key("retries: many"), "retries: expected a whole number"),
    "huge-timeout.yaml": (with_key("timeout: 9999d"), "timeout: 863913600s is more"),
    "negative-retries.yaml": (with_key("retries: -1"), "retries: must be between"),
    "too-many-retries.yaml": (with_key("retries: 1000"), "retries: must be between"),
    "traversal.yaml": (with_key("repo_dir: ../../etc"), "repo_dir: '../../etc' must be"),
    "dotdot.yaml": (with_key("repo_dir: .."), "repo_dir: '..' must be"),
    "dash-dir.yaml": (with_key("repo_dir: -rf"), "repo_dir: '-rf' must be"),
    "ext-url.yaml": (b"repo_url: 'ext::sh -c touch% /tmp/pwned'\nprompt: x\n", "repo_url:"),
    "ext-nospace.yaml": (b"repo_url: ext::sh\nprompt: x\n", "git remote helper"),
    "upload-pack.yaml": (
        b"repo_url: --upload-pack=touch /tmp/pwned\nprompt: x\n",
        "starts with '-'",
    ),
    "file-url.yaml": (b"repo_url: file:///etc\nprompt: x\n", "local repositories"),
    "path-url.yaml": (b"repo_url: /srv/repo.git\nprompt: x\n", "local repositories"),
    "http-url.yaml": (b"repo_url: http://h/a/b\nprompt: x\n", "protocol 'http' is not allowed"),
    "off-allowlist.yaml": (
        b"repo_url: https://evil.example/x/y\nprompt: x\n",
        "not in allowed_repos",
    ),
    "credentials.yaml": (
        b"repo_url: https://u:hunter2@h/acme/b\nprompt: x\n",
        "contains credentials",
    ),
    "env-path.yaml": (with_key("env: {PATH: /tmp}"), "env: PATH is reserved"),
    "env-ld.yaml": (with_key("env: {LD_PRELOAD: /tmp/x.so}"), "env: LD_PRELOAD is reserved"),
    "env-git.yaml": (with_key("env: {GIT_SSH_COMMAND: sh}"), "env: GIT_SSH_COMMAND is reserved"),
    "env-key.yaml": (with_key("env: {CODEX_API_KEY: x}"), "env: CODEX_API_KEY is reserved"),
    "env-contract.yaml": (with_key("env: {REPO_URL: x}"), "env: REPO_URL is reserved"),
    "env-name.yaml": (with_key("env: {'A-B': x}"), "is not a valid variable name"),
    "too-much-memory.yaml": (with_key("memory: 1t"), "memory:"),
}


def test_hostile_corpus(
    work_root: Path,
    start_daemon: Callable[..., DaemonProcess],
    docker_client: docker.DockerClient,
    tmp_path: Path,
    git_server: GitServer,
) -> None:
    assert len(CORPUS) >= 40
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("not for jobs")
    valid_url = git_server.url("demo.git")
    daemon = start_daemon(
        allowed_repos=["https://example.invalid/*", "https://h/*", valid_url],
        allowed_protocols=["https", "git"],
    )
    since = int(time.time())
    inbox = work_root / "inbox"
    for name, (data, _) in CORPUS.items():
        (inbox / f".{name}.part").write_bytes(data)
        os.rename(inbox / f".{name}.part", inbox / name)
    os.symlink("/etc/passwd", inbox / "passwd.yaml")
    os.symlink(outside, inbox / "outside.yaml")
    (inbox / "dir.yaml").mkdir()
    os.mkfifo(inbox / "fifo.yaml")
    specials = {"passwd.yaml": "symlink", "outside.yaml": "symlink", "dir.yaml": "directory",
                "fifo.yaml": "fifo"}  # fmt: skip

    for name, (data, words) in CORPUS.items():
        folder, path = wait_finished(work_root, name, timeout=60)
        record = exit_record(work_root, path)
        assert folder == "failed", name
        assert path.read_bytes() == data, f"{name}: bytes changed"
        assert record["state"] == "invalid", name
        assert words in record["reason"], (name, record["reason"])
    for name, kind in specials.items():
        folder, path = wait_finished(work_root, name, timeout=60)
        assert folder == "failed"
        assert f"is a {kind}" in exit_record(work_root, path)["reason"]
    assert os.readlink(wait_finished(work_root, "passwd.yaml")[1]) == "/etc/passwd"
    assert outside.read_text() == "not for jobs"
    assert "hunter2" not in daemon.log()

    write_job(inbox, "valid.yaml", repo_url=valid_url, prompt="succeed")
    assert wait_finished(work_root, "valid.yaml", timeout=60)[0] == "done"
    assert daemon.alive()
    creates = docker_client.events(
        since=since, until=int(time.time()) + 1, decode=True,
        filters={"type": "container", "event": "create", "label": f"watcherd.root={work_root}"},
    )  # fmt: skip
    assert len(list(creates)) == 1  # only the valid job ran
