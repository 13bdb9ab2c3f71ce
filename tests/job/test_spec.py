"""Job file parsing: every bad input gets an error naming the key or line."""

from __future__ import annotations

import re

import pytest

from watcherd.config import Config
from watcherd.job.spec import InvalidJob, parse_job
from watcherd.spool.folders import MAX_JOB_BYTES

CONFIG = Config()


def parse(text: str | bytes, config: Config = CONFIG):  # type: ignore[no-untyped-def]
    return parse_job(text.encode() if isinstance(text, str) else text, config)


def test_minimal_job_gets_defaults() -> None:
    spec = parse("repo_url: https://github.com/acme/widgets.git\nprompt: fix the tests\n")
    assert spec.repo_dir == "widgets"
    assert spec.mode == "exec"
    assert spec.timeout == CONFIG.default_timeout
    assert spec.max_attempts == CONFIG.retries + 1


def test_full_job() -> None:
    spec = parse(
        "repo_url: https://github.com/acme/widgets\nprompt: p\nrepo_ref: v1.2\nrepo_dir: w\n"
        "mode: review\nflags: \"--output-schema 'schema file.json' -m=gpt-5\"\nmodel: gpt-5\n"
        "timeout: 30m\nenv: {CI: 1, NAME: x}\nretries: 0\nmemory: 1g\ncpus: 1\n"
    )
    assert spec.flags == ("--output-schema", "schema file.json", "-m=gpt-5")
    assert spec.timeout == 1800
    assert spec.env == {"CI": "1", "NAME": "x"}
    assert (spec.retries, spec.memory, spec.cpus) == (0, 1024**3, 1.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prompt: p\n", "repo_url: required"),
        ("repo_url: https://h/r\n", "prompt: required"),
        ("repo_url: https://h/r\nprompt: '   '\n", "prompt: must not be empty"),
        ("repo_url: https://h/r\nprompt: p\ncolour: red\n", "unknown key(s): colour"),
        ("repo_url: https://h/r\nprompt: [a]\n", "prompt: expected a string, got list"),
        ("repo_url: https://h/r\nprompt: p\ntimeout: soon\n", "timeout: expected seconds"),
        ("repo_url: https://h/r\nprompt: p\ntimeout: 1000d\n", "timeout: 86400000s is more"),
        ("repo_url: https://h/r\nprompt: p\ntimeout: .nan\n", "timeout: expected a finite"),
        ("repo_url: https://h/r\nprompt: p\nretries: -1\n", "retries: must be between"),
        ("repo_url: https://h/r\nprompt: p\nretries: true\n", "retries: expected a whole"),
        ("repo_url: https://h/r\nprompt: p\nmode: yolo\n", "mode: expected one of exec, review"),
        ("repo_url: https://h/r\nprompt: p\nflags: 3\n", "flags: expected a list"),
        ("repo_url: https://h/r\nprompt: p\nenv: {PATH: /x}\n", "env: PATH is reserved"),
        ("repo_url: https://h/r\nprompt: p\nenv: {LD_PRELOAD: x}\n", "LD_PRELOAD is reserved"),
        ("repo_url: https://h/r\nprompt: p\nenv: {GIT_SSH: x}\n", "GIT_SSH is reserved"),
        ("repo_url: https://h/r\nprompt: p\nenv: {CODEX_API_KEY: x}\n", "reserved"),
        ("repo_url: https://h/r\nprompt: p\nenv: {'1X': x}\n", "not a valid variable name"),
        # A trailing newline once slipped past the name checks ("$" matches before it).
        ('repo_url: https://h/r\nprompt: p\nenv: {"A\\n": x}\n', "not a valid variable name"),
        ('repo_url: https://h/r\nprompt: p\nrepo_dir: "w\\n"\n', "repo_dir: 'w\\n' must be"),
        ('repo_url: https://h/r\nprompt: p\nrepo_ref: "main\\n"\n', "repo_ref: 'main\\n' is not"),
        ('repo_url: https://h/r\nprompt: p\nmodel: "gpt-5\\n"\n', "model: 'gpt-5\\n' is not"),
        ("repo_url: https://h/r\nprompt: p\nrepo_dir: ../etc\n", "repo_dir: '../etc' must be"),
        ("repo_url: https://h/r\nprompt: p\nrepo_dir: .git\n", "repo_dir"),
        ("repo_url: https://h/r\nprompt: p\nrepo_ref: --upload-pack=x\n", "repo_ref"),
        ("repo_url: https://h/r\nprompt: p\nmemory: 1t\n", "memory"),
        ("repo_url: https://h/r\nprompt: p\ncpus: 64\n", "cpus: must be at least 0.01 and at most"),
        ("repo_url: https://h/r\nprompt: p\ncpus: 0.0000000001\n", "cpus: must be at least 0.01"),
        ("repo_url: 'ext::sh -c touch% /tmp/x'\nprompt: p\n", "repo_url: contains whitespace"),
        ("repo_url: ext::ssh\nprompt: p\n", "repo_url: uses a git remote helper"),
        ("repo_url: --upload-pack=touch /tmp/x\nprompt: p\n", "repo_url: starts with '-'"),
        ("repo_url: file:///srv/r\nprompt: p\n", "local repositories"),
        ("repo_url: /srv/r\nprompt: p\n", "local repositories"),
        ("repo_url: http://h/r\nprompt: p\n", "protocol 'http' is not allowed"),
        ("repo_url: https://u:tok@h/r\nprompt: p\n", "contains credentials"),
        ("repo_url: https://h/\nprompt: p\n", "cannot derive a safe folder name"),
        ("- a\n- b\n", "expected a mapping"),
        ("", "the file is empty"),
        ("just text\n", "the file is a str"),
        ("a: 1\n---\nb: 2\n", "YAML syntax error"),
        ("repo_url: [unclosed\n", "YAML syntax error: line"),
        ("a: &x [1]\nb: *x\n", "line 2: YAML aliases"),
        ("repo_url: https://h/r\nprompt: p\npool: gpu\n", "no pool named 'gpu' in the daemon's"),
        ("repo_url: https://h/r\nprompt: p\npool: [node.role==manager]\n", "pool: expected"),
    ],
)
def test_invalid_jobs_name_the_problem(text: str, expected: str) -> None:
    with pytest.raises(InvalidJob) as caught:
        parse(text)
    assert expected in str(caught.value)


def test_byte_level_problems() -> None:
    with pytest.raises(InvalidJob, match="limited to 65536"):
        parse(b"a" * (MAX_JOB_BYTES + 1))
    with pytest.raises(InvalidJob, match="NUL bytes"):
        parse(b"prompt: a\x00b\n")
    with pytest.raises(InvalidJob, match=r"not UTF-8 text \(bad byte at offset 8"):
        parse(b"prompt: \xff\xfe\n")


@pytest.mark.parametrize(
    ("extra", "key"),
    [('prompt: "fix\\0it"', "prompt"), ('flags: ["\\0"]', "flags"),
     ('flags: "a\\0b"', "flags"), ('env: {A: "b\\0c"}', "env")],
)  # fmt: skip
def test_a_nul_written_as_a_yaml_escape_is_refused_by_key(extra: str, key: str) -> None:
    """No raw NUL byte, but YAML's \\0 makes one: it would reach the container's environment
    (PROMPT, AGENT_FLAGS, the job's env), where no process can be given it."""
    text = "repo_url: https://h/r\n" + ("" if key == "prompt" else "prompt: p\n") + extra + "\n"
    assert "\x00" not in text
    with pytest.raises(InvalidJob) as caught:
        parse(text)
    assert f"{key}: contains a NUL character" in str(caught.value)


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 10):
        prev = chr(ord("a") + i - 1)
        name = chr(ord("a") + i)
        lines.append(f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    with pytest.raises(InvalidJob, match="aliases"):
        parse("\n".join(lines))


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(InvalidJob):
        parse("a: " + "[" * 20000 + "]" * 20000)


def test_policy_from_config() -> None:
    config = Config(
        allowed_repos=("https://github.com/acme/*",), allowed_protocols=("https", "file")
    )
    assert parse("repo_url: file:///srv/r.git\nprompt: p\n", config.replace(allowed_repos=("*",)))
    with pytest.raises(InvalidJob, match="not in allowed_repos"):
        parse("repo_url: https://evil.example/acme/x\nprompt: p\n", config)
    assert parse("repo_url: https://github.com/acme/x\nprompt: p\n", config).repo_dir == "x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "repo_url: https://h/a/b\nprompt: p\nrepo_url: https://h/c/d\n",
            "line 3: duplicate key 'repo_url' (first on line 1)",
        ),
        (
            "repo_url: https://h/a/b\nprompt: p\nenv:\n  CI: '1'\n  CI: '2'\n",
            "line 5: duplicate key 'CI' (first on line 4)",
        ),
        (
            "repo_url: https://h/a/b\nprompt: p\nenv: {A: x, B: y, A: z}\n",
            "line 3: duplicate key 'A' (first on line 3)",
        ),
        # Quoting does not make a key different.
        (
            "repo_url: https://h/a/b\n'prompt': p\n\"prompt\": q\n",
            "line 3: duplicate key 'prompt' (first on line 2)",
        ),
    ],
)
def test_duplicate_keys_are_refused_with_their_lines(text: str, expected: str) -> None:
    with pytest.raises(InvalidJob) as caught:
        parse(text)
    assert str(caught.value) == expected


def test_agent_keys_are_checked_against_what_the_agent_supports() -> None:
    from watcherd.config import Config

    config = Config()
    base = "repo_url: https://h/a/b.git\nprompt: x\n"
    assert parse_job((base + "agent: codex\nresume: fix-42\n").encode(), config).resume == "fix-42"
    with pytest.raises(InvalidJob, match="agent: 'nope' is not an agent"):
        parse_job((base + "agent: nope\n").encode(), config)
    with pytest.raises(InvalidJob, match="max_turns: codex does not support max_turns"):
        parse_job((base + "max_turns: 3\n").encode(), config)
    with pytest.raises(InvalidJob, match="max_turns: must be between 1 and 1000"):
        parse_job((base + "max_turns: 0\n").encode(), config)
    with pytest.raises(InvalidJob, match=re.escape("resume: '../x' is not the name or id")):
        parse_job((base + "resume: ../x\n").encode(), config)


def test_a_pool_is_a_name_the_operator_configured() -> None:
    config = Config(pools={"gpu": ("node.labels.gpu==true",)})
    assert parse("repo_url: https://h/r\nprompt: p\npool: gpu\n", config).pool == "gpu"


@pytest.mark.parametrize(
    ("agent", "flags"),
    [
        ("codex", ["-c", "model_providers.x.base_url=http://evil.test"]),
        ("codex", ["--config=model_provider=evil"]),
        ("codex", ["--profile", "evil"]),
        ("codex", ["--dangerously-bypass-approvals-and-sandbox"]),
        ("codex", ["--", "resume"]),
        ("claude", ["--settings", "/work/out/evil.json"]),
        ("claude", ["--mcp-config", "{}"]),
        ("claude", ["--permission-mode=default"]),
        ("gemini", ["--approval-mode", "yolo"]),
        ("opencode", ["--port", "9"]),
    ],
)
def test_flags_that_could_move_the_model_or_the_sandbox_are_refused(
    agent: str, flags: list[str]
) -> None:
    text = f"repo_url: https://h/r\nprompt: p\nagent: {agent}\nflags: {flags!r}\n"
    with pytest.raises(InvalidJob, match=f"flags: {agent} does not take"):
        parse(text)


def test_the_network_keys_take_only_what_the_operator_offers() -> None:
    from watcherd.gateway.egress import Allowlist

    config = Config(egress={"pypi": Allowlist("pypi", ("pypi.org",))})
    assert parse("repo_url: https://h/r\nprompt: p\n").network == "model"
    assert parse("repo_url: https://h/r\nprompt: p\nnetwork: [pypi]\n", config).network == ("pypi",)
    for text, expected in (
        ("network: [npm]", "no egress allowlist named 'npm'"),
        ("network: open", "allow_open_network"),
        ("network_tools: true", "allow_network_tools"),
        ("token_budget: 0", "at least 1"),
    ):
        with pytest.raises(InvalidJob, match=expected):
            parse(f"repo_url: https://h/r\nprompt: p\n{text}\n", config)
    opened = Config(allow_open_network=True, allow_network_tools=True)
    job = parse("repo_url: https://h/r\nprompt: p\nnetwork: open\nnetwork_tools: true\n", opened)
    assert (job.network, job.network_tools) == ("open", True)
