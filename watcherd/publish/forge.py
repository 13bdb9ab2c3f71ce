"""The seam between publishing and a forge: what the daemon asks of one (its default
branch, the pull request for a head branch, creating and updating one, the credential git
pushes with). GitHub (and GitHub Enterprise, by its API URL) implements it in github.py;
Gitea/Forgejo and GitLab can follow, each registered in forges.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from watcherd.config.publish import ForgeSettings
from watcherd.publish.credentials import Secret


class ForgeError(Exception):
    """The forge refused or could not be reached; ``transient`` if worth another try."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class RepoId:
    """A repository on a forge: ``acme/widgets``, and how git reaches it."""

    owner: str
    name: str
    git_url: str  # what git pushes to: https://github.com/acme/widgets.git (never a credential)
    web_url: str  # https://github.com/acme/widgets

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str  # its page
    draft: bool
    title: str = ""
    body: str = ""
    base: str = ""
    node_id: str = ""  # the forge's global id, where it has one (GitHub's GraphQL)


@dataclass(frozen=True)
class GitCredential:
    """What git sends with a push: a user name and a password (the token)."""

    username: str
    password: Secret


class Forge(Protocol):
    """One repository on one forge, with the daemon's credential there."""

    repo: RepoId

    def git_credential(self) -> GitCredential: ...

    def default_branch(self) -> str: ...

    def find_pull(self, head: str) -> PullRequest | None:
        """The open pull request whose head is ``head`` (a branch of this repository)."""
        ...

    def create_pull(self, *, head: str, base: str, title: str, body: str,
                    draft: bool) -> PullRequest: ...  # fmt: skip

    def update_pull(self, pull: PullRequest, *, title: str, body: str) -> PullRequest: ...

    def set_draft(self, pull: PullRequest, draft: bool) -> PullRequest: ...

    def branch_url(self, branch: str) -> str: ...

    def secrets(self) -> list[Secret]:
        """Every credential this forge holds now, to scrub from what it reports."""
        ...


class ForgeFactory(Protocol):
    def __call__(self, settings: ForgeSettings, repo: RepoId, timeout: float) -> Forge: ...
