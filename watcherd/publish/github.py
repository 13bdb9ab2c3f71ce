"""GitHub and GitHub Enterprise (by API URL): the REST endpoints publishing uses, and
GraphQL for the one thing REST cannot do (a draft made ready, or back).

    GET   /repos/{owner}/{repo}                       its default branch
    GET   /repos/{owner}/{repo}/pulls?head=o:b        the open pull request of a branch
    POST  /repos/{owner}/{repo}/pulls                 open one (draft or ready)
    PATCH /repos/{owner}/{repo}/pulls/{number}        its title and body
    POST  /graphql          markPullRequestReadyForReview, convertPullRequestToDraft

Credentials: a fine-grained token (Contents and Pull requests: read and write, on the
repositories it may publish to), or a GitHub App, whose JWT buys an installation token
limited to the one repository and those two permissions, good for an hour, for each publish.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from watcherd.config.publish import ForgeSettings
from watcherd.publish.api import JsonApi
from watcherd.publish.credentials import Secret, app_jwt, read_token
from watcherd.publish.forge import ForgeError, GitCredential, PullRequest, RepoId

GIT_USER = "x-access-token"  # GitHub's user name for a token in git's Basic auth
APP_PERMISSIONS = {"contents": "write", "pull_requests": "write"}
MAX_BODY = 60_000  # GitHub refuses bodies over 65,536 characters


class GitHub:
    def __init__(self, settings: ForgeSettings, repo: RepoId, timeout: float) -> None:
        self.settings = settings
        self.repo = repo
        self.api = JsonApi(settings.api_url, timeout)
        self._token: Secret | None = None
        self._held: list[Secret] = []

    # -- the credential -------------------------------------------------------------------

    def token(self) -> Secret:
        """The token the API and git use: the configured one, or a fresh installation
        token of the App, asked for once per publish."""
        if self._token is None:
            if self.settings.token_file is not None:
                self._token = read_token(self.settings.token_file)
            else:
                self._token = self._installation_token()
            self._held.append(self._token)
        return self._token

    def _installation_token(self) -> Secret:
        assert self.settings.app_id is not None and self.settings.app_key_file is not None
        jwt = app_jwt(self.settings.app_id, self.settings.app_key_file)
        self._held.append(jwt)
        bearer = f"Bearer {jwt.reveal()}"
        installation = self.settings.app_installation_id
        if installation is None:
            found = self.api.call("GET", f"{self._repo_path}/installation", authorization=bearer)
            installation = found.get("id") if isinstance(found, dict) else None
            if not isinstance(installation, int):
                raise ForgeError(f"the App is not installed on {self.repo.full_name}")
        answer = self.api.call(
            "POST", f"/app/installations/{installation}/access_tokens", authorization=bearer,
            body={"repositories": [self.repo.name], "permissions": APP_PERMISSIONS},
        )  # fmt: skip
        token = answer.get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise ForgeError("the forge gave the App no installation token")
        return Secret(token)

    def git_credential(self) -> GitCredential:
        return GitCredential(GIT_USER, self.token())

    def secrets(self) -> list[Secret]:
        return list(self._held)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.api.call(method, path, authorization=f"Bearer {self.token().reveal()}",
                             **kwargs)  # fmt: skip

    @property
    def _repo_path(self) -> str:
        owner = urllib.parse.quote(self.repo.owner, safe="")
        return f"/repos/{owner}/{urllib.parse.quote(self.repo.name, safe='')}"

    # -- the repository and its pull requests ---------------------------------------------

    def default_branch(self) -> str:
        data = self._call("GET", self._repo_path)
        branch = data.get("default_branch") if isinstance(data, dict) else None
        if not isinstance(branch, str) or not branch:
            raise ForgeError(f"the forge did not say {self.repo.full_name}'s default branch")
        return branch

    def find_pull(self, head: str) -> PullRequest | None:
        query = {"head": f"{self.repo.owner}:{head}", "state": "open", "per_page": "10"}
        pulls = self._call("GET", f"{self._repo_path}/pulls", query=query)
        if not isinstance(pulls, list):
            raise ForgeError("the forge's list of pull requests is not a list")
        for pull in pulls:
            found = _pull(pull)
            ref = pull.get("head", {}).get("ref") if isinstance(pull, dict) else None
            if found is not None and ref in (None, head):
                return found
        return None

    def create_pull(
        self, *, head: str, base: str, title: str, body: str, draft: bool
    ) -> PullRequest:
        payload = {"title": title, "head": head, "base": base, "body": body[:MAX_BODY],
                   "draft": draft, "maintainer_can_modify": False}  # fmt: skip
        try:
            data = self._call("POST", f"{self._repo_path}/pulls", body=payload, expect=(201,))
        except ForgeError as exc:
            if "already exists" in str(exc):  # opened meanwhile (another daemon): that one
                found = self.find_pull(head)
                if found is not None:
                    return found
            raise
        return _must_pull(data)

    def update_pull(self, pull: PullRequest, *, title: str, body: str) -> PullRequest:
        data = self._call("PATCH", f"{self._repo_path}/pulls/{pull.number}",
                          body={"title": title, "body": body[:MAX_BODY]})  # fmt: skip
        return _must_pull(data)

    def set_draft(self, pull: PullRequest, draft: bool) -> PullRequest:
        mutation = "convertPullRequestToDraft" if draft else "markPullRequestReadyForReview"
        query = (f"mutation($id: ID!) {{ {mutation}(input: {{pullRequestId: $id}}) "
                 "{ pullRequest { isDraft } } }")  # fmt: skip
        api = JsonApi(_graphql_url(self.settings.api_url), self.api.timeout)
        answer = api.call("POST", "", authorization=f"Bearer {self.token().reveal()}",
                          body={"query": query, "variables": {"id": pull.node_id}})  # fmt: skip
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if errors:
            said = errors[0].get("message") if isinstance(errors[0], dict) else errors[0]
            raise ForgeError(f"the forge would not make the pull request "
                             f"{'a draft' if draft else 'ready'}: {str(said)[:300]}")  # fmt: skip
        return PullRequest(pull.number, pull.url, draft, pull.title, pull.body, pull.base,
                           pull.node_id)  # fmt: skip

    def branch_url(self, branch: str) -> str:
        return f"{self.repo.web_url}/tree/{urllib.parse.quote(branch)}"


def _graphql_url(api_url: str) -> str:
    """https://api.github.com → …/graphql; GitHub Enterprise's …/api/v3 → …/api/graphql."""
    if api_url.endswith("/api/v3"):
        return api_url.removesuffix("/v3") + "/graphql"
    return api_url + "/graphql"


def _pull(data: Any) -> PullRequest | None:
    if not isinstance(data, dict):
        return None
    number, url = data.get("number"), data.get("html_url")
    if not isinstance(number, int) or not isinstance(url, str):
        return None
    base = data.get("base")
    return PullRequest(
        number, url, bool(data.get("draft")), str(data.get("title") or ""),
        str(data.get("body") or ""), str(base.get("ref") or "") if isinstance(base, dict) else "",
        str(data.get("node_id") or ""),
    )  # fmt: skip


def _must_pull(data: Any) -> PullRequest:
    pull = _pull(data)
    if pull is None:
        raise ForgeError("the forge's answer is not a pull request")
    return pull
