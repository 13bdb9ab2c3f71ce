from __future__ import annotations

import pytest

from watcherd.repo.url import (
    RepoUrlError,
    check_repo_url,
    has_credentials,
    is_safe_segment,
    redact,
    repo_name,
    url_protocol,
)


@pytest.mark.parametrize(
    ("url", "protocol"),
    [
        ("https://h/r.git", "https"),
        ("git@github.com:a/b.git", "ssh"),
        ("ssh://git@h/r", "ssh"),
        ("file:///srv/r", "file"),
        ("/srv/r", "file"),
        ("ext::sh", "ext"),
        ("fd::3", "fd"),
    ],
)
def test_protocols(url: str, protocol: str) -> None:
    assert url_protocol(url) == protocol


def test_names_and_credentials() -> None:
    assert repo_name("git@github.com:a/b.git") == "b"
    assert repo_name("https://h/x/y/") == "y"
    assert has_credentials("https://tok@h/r")
    assert not has_credentials("ssh://git@h/r")
    assert redact("see https://user:secret@h/r and http://t@x/") == (
        "see https://***@h/r and http://***@x/"
    )


def test_never_protocols_even_if_configured() -> None:
    with pytest.raises(RepoUrlError):
        check_repo_url("fd::3", ("*",), ("https", "fd"))


@pytest.mark.parametrize("name", ["w", "my_repo.v2", "a-b"])
def test_safe_segments(name: str) -> None:
    assert is_safe_segment(name)


@pytest.mark.parametrize("name", ["", ".", "..", ".git", "-rf", "a/b", "w\n", "a b", "x" * 101])
def test_unsafe_segments(name: str) -> None:
    assert not is_safe_segment(name)


@pytest.mark.parametrize(
    "url",
    ["ssh://-oProxyCommand=id/x", "ssh://-oProxyCommand=id@h/x", "ssh://h:-1/x",
     "https://-h/x.git", "git@-oProxyCommand:a/b"],
)  # fmt: skip
def test_a_host_user_or_port_that_ssh_would_read_as_an_option_is_refused(url: str) -> None:
    """``ssh://-oProxyCommand=...`` is the option injection of CVE-2017-1000117: git has
    refused it since 2.14.1; a job's URL is refused here whatever git runs it."""
    with pytest.raises(RepoUrlError, match="starts with '-'"):
        check_repo_url(url, ("*",), ("https", "ssh"))
    assert check_repo_url("ssh://git@h-1.example:2222/a-b/c", ("*",), ("ssh",))
