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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("concurrency: 0", "concurrency must be at least 1, got 0"),
        ("concurrency: 2.7", "setting 'concurrency': expected a whole number, got 2.7"),
        ("concurrency: '2.7'", "setting 'concurrency': expected a whole number, got '2.7'"),
        ("concurrency: true", "setting 'concurrency': expected a whole number, got a boolean"),
        ("concurrency: [2]", "setting 'concurrency': expected a whole number, got [2]"),
        ("pids_limit: 0", "pids_limit must be at least 64, got 0"),
        ("pids_limit: -1", "pids_limit must be at least 64, got -1"),
        ("pids_limit: 16", "pids_limit must be at least 64, got 16"),
        ("cpus: 0", "cpus must be at least 0.01, got 0"),
        ("cpus: -2", "cpus must be at least 0.01, got -2"),
        ("cpus: .nan", "setting 'cpus': expected a finite number"),
        ("cpus: .inf", "setting 'cpus': expected a finite number"),
        ("cpus: lots", "setting 'cpus': expected a number, got 'lots'"),
        ("memory_limit: 1", "memory_limit must be at least 64m (67108864 bytes), got 1 bytes"),
        ("memory_limit: 63m", "memory_limit must be at least 64m"),
        ("memory_limit: 0", "setting 'memory_limit': must be more than zero"),
        ("settle_seconds: -0.5", "settle_seconds must not be negative, got -0.5"),
        ("settle_seconds: .nan", "setting 'settle_seconds': expected a finite number"),
        ("rescan_seconds: 0", "setting 'rescan_seconds': must be more than zero"),
        ("backoff_initial: 0", "setting 'backoff_initial': must be more than zero"),
        ("backoff_max: -1", "setting 'backoff_max': must be more than zero"),
        (
            "backoff_initial: 10s\nbackoff_max: 5s",
            "backoff_initial (10s) must not be more than backoff_max (5s)",
        ),
        (
            "default_timeout: 2h\nmax_timeout: 1h",
            "default_timeout (7200s) must not be more than max_timeout (3600s)",
        ),
        ("default_timeout: .inf", "setting 'default_timeout': expected a finite duration"),
        ("retries: -1", "retries must be between 0 and max_retries (10), got -1"),
        ("retries: 11", "retries must be between 0 and max_retries (10), got 11"),
        ("retries: 1.5", "setting 'retries': expected a whole number, got 1.5"),
        ("max_retries: -1\nretries: 0", "max_retries must not be negative, got -1"),
        ("backend: k8s", "backend must be one of local, swarm, got 'k8s'"),
        ("disk_bound: quota", "disk_bound must be one of auto, require, poll, got 'quota'"),
        ("network_mode: host", "set allow_host_network: true"),
        ("token_budget: -1", "token_budget must not be negative"),
        ("allow_open_network: maybe", "expected true or false"),
        ("egress: {pypi: {hosts: [10.0.0.1]}}", "egress"),
        ("egress_hosts: {a.test: [nope]}", "is not an IP address"),
        ("pools: [gpu]", "setting 'pools': expected a mapping of pool names"),
        ("pools: {gpu: []}", "pool 'gpu': each constraint needs == or !="),
        ("pools: {gpu: [node.labels.gpu]}", "pool 'gpu': each constraint needs == or !="),
        ("pools: {'a b': [node.role==worker]}", "pool name 'a b': letters, digits"),
    ],
)
def test_numbers_out_of_range_are_refused_by_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write_config(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_lowest_allowed_numbers_are_accepted(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "concurrency: 1\npids_limit: 64\ncpus: 0.01\nmemory_limit: 64m\nsettle_seconds: 0\n"
        "retries: 0\nmax_retries: 0\nbackoff_initial: 5s\nbackoff_max: 5s\n"
        "default_timeout: 1h\nmax_timeout: 1h\n",
    )
    config = load_config(path, environ={})
    assert (config.concurrency, config.pids_limit, config.cpus) == (1, 64, 0.01)
    assert (config.memory_limit, config.settle_seconds, config.max_retries) == (64 * 1024**2, 0, 0)


def test_a_whole_float_is_a_whole_number(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path, "concurrency: 3.0\n"), environ={}).concurrency == 3


@pytest.mark.parametrize(("variable", "expected"), [("3", 3), (" 4 ", 4)])
def test_whole_numbers_from_the_environment(tmp_path: Path, variable: str, expected: int) -> None:
    empty = write_config(tmp_path, "")
    config = load_config(empty, environ={"WATCHERD_CONCURRENCY": variable})
    assert config.concurrency == expected


@pytest.mark.parametrize("variable", ["2.7", "two", "0", "-1"])
def test_bad_numbers_from_the_environment_are_refused(tmp_path: Path, variable: str) -> None:
    empty = write_config(tmp_path, "")
    with pytest.raises(ConfigError, match="concurrency"):
        load_config(empty, environ={"WATCHERD_CONCURRENCY": variable})


def test_the_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "systemd" / "config.example.yaml"
    assert load_config(example, environ={}).allowed_repos == ("https://github.com/acme/*",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("extra_env: {PATH: /tmp}", "PATH is reserved and cannot be set by the config"),
        ("extra_env: {LD_PRELOAD: x.so}", "LD_PRELOAD is reserved"),
        ("extra_env: {HOME: /root}", "HOME is reserved"),
        ("extra_env: {GIT_SSH_COMMAND: sh}", "GIT_SSH_COMMAND is reserved"),
        ("extra_env: {CODEX_API_KEY: k}", "CODEX_API_KEY is reserved"),
        ("extra_env: {OPENAI_API_KEY: k}", "OPENAI_API_KEY is reserved"),
        ("extra_env: {REPO_URL: x}", "REPO_URL is reserved"),
        ("extra_env: {'A-B': x}", "'A-B' is not a valid variable name"),
        ("extra_env: {1: x}", "1 is not a valid variable name"),
        ("extra_env: [A]", "expected a mapping of NAME: value, got list"),
        ("extra_env: {A: [x]}", "A: expected a string or number, got list"),
    ],
)
def test_extra_env_follows_the_jobs_env_rules(tmp_path: Path, text: str, expected: str) -> None:
    path = write_config(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert f"setting 'extra_env': {expected}" in str(caught.value)


def test_extra_env_takes_ordinary_names(tmp_path: Path) -> None:
    # The end-to-end tests pass a key for their scripted model this way.
    path = write_config(tmp_path, "extra_env: {SCRIPTED_API_KEY: k, CI: 1}\n")
    assert load_config(path, environ={}).extra_env == {"SCRIPTED_API_KEY": "k", "CI": "1"}


def test_swarm_backend_and_pools(tmp_path: Path) -> None:
    text = "backend: swarm\npools:\n  gpu: [node.labels.gpu==true, node.role!=manager]\n"
    config = load_config(write_config(tmp_path, text), environ={})
    assert config.backend == "swarm"
    assert config.pools == {"gpu": ("node.labels.gpu==true", "node.role!=manager")}
    assert load_config(None, environ={"WATCHERD_BACKEND": "swarm"}).backend == "swarm"


@pytest.mark.parametrize(
    ("text", "read_only"), [("", False), ("mcp: {read_only: true}\n", True), ("mcp:\n", False)]
)
def test_the_mcp_section(tmp_path: Path, text: str, read_only: bool) -> None:
    assert load_config(write_config(tmp_path, text), environ={}).mcp.read_only is read_only


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mcp: {readonly: true}", "unknown key(s): readonly (allowed: read_only)"),
        ("mcp: {read_only: maybe}", "read_only: expected true or false, got 'maybe'"),
        ("mcp: true", "expected a mapping such as {read_only: true}"),
    ],
)
def test_a_bad_mcp_section_is_named(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, text + "\n"), environ={})
    assert f"setting 'mcp': {expected}" in str(caught.value)


def test_relay_settings_are_read_and_checked(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, (
        "backend: swarm\nrelay: {listen: '10.0.0.5:7433', sockets_dir: /run/wd, "
        "credential: /etc/watcherd/relay.pem}\n"
    )))  # fmt: skip
    assert config.relay.listen == ("10.0.0.5", 7433)
    assert (config.relay.sockets_dir, config.relay.credential) == (
        Path("/run/wd"), Path("/etc/watcherd/relay.pem"))  # fmt: skip
    assert load_config(write_config(tmp_path, "backend: swarm\n")).relay.listen is None
    for text, expected in [
        ("backend: swarm\nrelay: {listen: 10.0.0.5}\n", "'relay': listen: expected host:port"),
        ("backend: swarm\nrelay: {listen: 'h:99999'}\n", "port 1..65535"),
        ("backend: swarm\nrelay: {sockets_dir: run/wd}\n", "sockets_dir: expected an absolute"),
        ("backend: swarm\nrelay: {lisen: 'h:1'}\n", "unknown key.*lisen"),
        ("relay: {listen: 'h:1'}\n", "relay.listen .* needs backend: swarm"),
    ]:
        with pytest.raises(ConfigError, match=expected):
            load_config(write_config(tmp_path, text))
