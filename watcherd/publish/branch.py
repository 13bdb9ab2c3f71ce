"""What is pushed, checked first, and the push: git on the results repository only.

A job's work is ``commit_before..commit_after`` in ``repos/<key>.git`` (the daemon's
record in exit.json, not the agent's). Before anything goes out it must:

- descend from ``commit_before`` (no history rewritten to drop what was upstream);
- stay within ``max_commits`` and ``max_bytes`` (every object the push would send);
- touch no protected path (CI definitions) in any of its commits, unless allowed;
- go to ``<branch_prefix><name>``, never the default branch, the job's base or a
  protected branch (checked again once the forge said its default branch).

The push gives git the credential through a pipe: a credential helper, scoped to the
remote's URL, reads it from a descriptor git inherits, so it is in no argument, no
environment variable, no file and no URL. Redirects are not followed (the credential stays
with that host), no other helper (the system's, the user's) is asked or told, and nothing
is forced except with a lease on the daemon's own last push to that branch, kept as
``refs/published/<branch>`` in the results repository.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from watcherd.config.publish import PublishSettings
from watcherd.publish.forge import GitCredential
from watcherd.repo.git import GitError, git_env, run_git
from watcherd.repo.url import redact

PUBLISHED_REFS = "refs/published/"  # the daemon's own last push to each remote branch


class Refused(Exception):
    """The work may not be published as it is; nothing was pushed. The reason says why."""


class PushFailed(Exception):
    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Work:
    repo: Path  # repos/<key>.git
    before: str  # commit_before
    after: str  # commit_after: what is pushed


def _git(repo: Path, *args: str, stdin: str | None = None, timeout: float = 120.0) -> str:
    env = git_env(("file",), GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null")
    return run_git(["--git-dir", str(repo), *args], env=env, stdin=stdin, timeout=timeout)


# -- the checks -------------------------------------------------------------------------


def check_work(work: Work, settings: PublishSettings, allow_protected: bool) -> int:
    """The number of commits to publish, or Refused saying what is wrong with them."""
    try:
        _git(work.repo, "rev-parse", "--verify", "--quiet", "--end-of-options",
             f"{work.after}^{{commit}}")  # fmt: skip
        _git(work.repo, "rev-parse", "--verify", "--quiet", "--end-of-options",
             f"{work.before}^{{commit}}")  # fmt: skip
    except GitError:
        raise Refused("the job's commits are not in its results repository") from None
    # commit_before is an ancestor of commit_after exactly when nothing is reachable from
    # it that is not from commit_after.
    dropped = int(_git(work.repo, "rev-list", "--count", work.before, f"^{work.after}") or 0)
    if dropped:
        raise Refused(
            f"the job's branch does not descend from commit_before {work.before[:12]} "
            f"(history rewritten: {dropped} upstream commit(s) dropped); not published"
        )
    count = int(_git(work.repo, "rev-list", "--count", f"{work.before}..{work.after}") or 0)
    if count > settings.max_commits:
        raise Refused(f"{count} commits is more than publish.max_commits "
                      f"({settings.max_commits}); not published")  # fmt: skip
    size = _objects_size(work)
    if size > settings.max_bytes:
        raise Refused(f"the push would send {size} bytes of objects, more than "
                      f"publish.max_bytes ({settings.max_bytes}); not published")  # fmt: skip
    if not allow_protected:
        hits = protected_changes(work, settings.protected_paths)
        if hits:
            shown = ", ".join(hits[:5]) + (f" and {len(hits) - 5} more" if len(hits) > 5 else "")
            raise Refused(f"the job's commits change protected path(s) {shown} (CI that would "
                          "run with the repository's secrets); not published "
                          "(publish.protected_paths, allow_protected_paths)")  # fmt: skip
    return count


def _objects_size(work: Work) -> int:
    """Every object the push would send at most (reachable from the work, not from its
    start), uncompressed."""
    listed = _git(work.repo, "rev-list", "--objects", work.after, f"^{work.before}")
    ids = [line.split(" ", 1)[0] for line in listed.splitlines() if line.strip()]
    if not ids:
        return 0
    sizes = _git(work.repo, "cat-file", "--batch-check=%(objectsize)", stdin="\n".join(ids))
    return sum(int(size) for size in sizes.split() if size.isdigit())


def protected_changes(work: Work, patterns: Sequence[str]) -> list[str]:
    """Paths changed by any commit of the work (each parent of a merge counted) that match a
    protected pattern. A commit that adds a workflow and a later one that takes it out
    still pushed it: each commit counts, not only the sum."""
    out = _git(work.repo, "log", "--format=", "--name-only", "-z", "--no-renames", "-m",
               f"{work.before}..{work.after}", "--")  # fmt: skip
    paths = {part.strip("\n") for part in out.split("\0")}
    return sorted(path for path in paths if path and matches_protected(path, patterns))


def matches_protected(path: str, patterns: Sequence[str]) -> bool:
    """``dir/`` matches the folder and all below it; anything else is an fnmatch pattern of
    the whole path. Case does not count (a checkout on macOS or Windows would not tell)."""
    lowered = path.lower()
    for pattern in patterns:
        wanted = pattern.lower()
        if wanted.endswith("/"):
            if lowered.startswith(wanted):
                return True
        elif fnmatch.fnmatchcase(lowered, wanted):
            return True
    return False


def check_branch_name(
    remote_branch: str, job_branch: str | None, *, protected: Sequence[str],
    default_branch: str | None = None, base: str | None = None,
) -> None:  # fmt: skip
    """Refused if the branch pushed to (or the job's own ``branch:``) is one that must not be
    written: the default branch, the job's base, a protected branch. Run without the forge
    (default_branch None) and again once it said its default branch."""
    named = {"the repository's default branch": default_branch, "the job's base ref": base}
    for candidate in dict.fromkeys(filter(None, (remote_branch, job_branch))):
        for what, value in named.items():
            if value and candidate == value:
                raise Refused(f"branch {candidate!r} is {what}; a job's work is never "
                              "pushed there (it goes to a branch of its own)")  # fmt: skip
        for pattern in protected:
            if fnmatch.fnmatchcase(candidate, pattern):
                raise Refused(f"branch {candidate!r} is protected (publish.protected_branches: "
                              f"{pattern}); not pushed")  # fmt: skip
    try:
        _git_plain("check-ref-format", f"refs/heads/{remote_branch}")
    except GitError:
        raise Refused(f"{remote_branch!r} is not a branch name git accepts") from None


def _git_plain(*args: str) -> str:
    return run_git(list(args), env=git_env(("file",), GIT_CONFIG_NOSYSTEM="1"))


# -- the push ---------------------------------------------------------------------------


@contextlib.contextmanager
def _credential_pipe(credential: GitCredential) -> Iterator[int]:
    """A pipe holding git's credential (``username=…`` and ``password=…`` lines), read end
    open for git to inherit; the write end is closed before git starts."""
    payload = f"username={credential.username}\npassword={credential.password.reveal()}\n"
    if "\n" in credential.username or "\n" in credential.password.reveal():
        raise PushFailed("the credential has a line break in it")
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, payload.encode())  # far below a pipe's 64 KiB: never blocks
        os.close(write_end)
        write_end = -1
        yield read_end
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def _with_credential(url: str, fd: int) -> list[str]:
    """git options that give the credential in ``fd`` to requests to ``url``'s origin only."""
    scheme, _, rest = url.partition("://")
    origin = f"{scheme}://{rest.split('/', 1)[0]}"
    # /dev/fd/N rather than <&N: a POSIX shell (dash) takes only one-digit descriptors.
    helper = f'!f() {{ if test "$1" = get; then cat /dev/fd/{fd}; fi; }}; f'
    return [
        "-c", "credential.helper=",  # no helper of the system's or the user's: none stores it
        "-c", f"credential.{origin}.helper={helper}",
        "-c", "credential.useHttpPath=false",
        "-c", "http.followRedirects=false",  # the credential stays with this host
    ]  # fmt: skip


def _remote_git(
    work_repo: Path, url: str, credential: GitCredential, protocols: Sequence[str],
    args: Sequence[str], timeout: float,
) -> str:  # fmt: skip
    scheme = url.split("://", 1)[0].lower()
    env = git_env([scheme] if scheme in protocols else [], GIT_CONFIG_NOSYSTEM="1",
                  GIT_CONFIG_GLOBAL="/dev/null")  # fmt: skip
    with _credential_pipe(credential) as fd:
        try:
            return run_git(["--git-dir", str(work_repo), *_with_credential(url, fd), *args],
                           env=env, timeout=timeout, pass_fds=(fd,))  # fmt: skip
        except GitError as exc:
            said = redact(credential.password.scrub(_what_git_said(exc)))
            raise PushFailed(_explain(said), transient=exc.transient) from None


def _what_git_said(exc: GitError) -> str:
    """The line of git's stderr that tells: a rejection, else the last that is no hint."""
    lines = [line.strip() for line in exc.stderr.splitlines()
             if line.strip() and not line.lstrip().startswith("hint:")]  # fmt: skip
    for line in lines:
        if "rejected" in line:
            return line[:500]
    return lines[-1][:500] if lines else str(exc)[:500]


def _explain(said: str) -> str:
    if "stale info" in said:
        return ("the remote branch moved since the daemon's last push to it (someone else "
                f"pushed there); not overwritten: {said}")  # fmt: skip
    if "non-fast-forward" in said or "fetch first" in said:
        return ("the remote branch has commits that are not in the job's branch, and the "
                f"daemon did not push them; not overwritten: {said}")  # fmt: skip
    if "Authentication failed" in said or "could not read Username" in said:
        return f"the forge refused the credential for the push: {said}"
    return f"git push failed: {said}"


def remote_head(
    work_repo: Path, url: str, branch: str, credential: GitCredential,
    protocols: Sequence[str], timeout: float,
) -> str | None:  # fmt: skip
    """The commit the remote's ``branch`` is at, or None when it has none."""
    args = ["ls-remote", "--refs", "--", url, f"refs/heads/{branch}"]
    out = _remote_git(work_repo, url, credential, protocols, args, timeout)
    for line in out.splitlines():
        commit, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return commit
    return None


def last_pushed(work_repo: Path, branch: str) -> str | None:
    """What the daemon last pushed to ``branch`` (its lease), if it ever did."""
    try:
        out = _git(work_repo, "rev-parse", "--verify", "--quiet", "--end-of-options",
                   f"{PUBLISHED_REFS}{branch}")  # fmt: skip
    except GitError:
        return None
    return out.strip() or None


def push(
    work: Work, url: str, branch: str, credential: GitCredential, *, remote_at: str | None,
    protocols: Sequence[str], timeout: float,
) -> None:  # fmt: skip
    """``work.after`` to ``refs/heads/<branch>`` at ``url``: created, fast-forwarded, or
    forced only over the daemon's own last push there (a lease, which git checks on the
    remote itself)."""
    args = ["push", "--no-verify"]
    lease = last_pushed(work.repo, branch)
    if remote_at is not None and lease is not None and lease == remote_at:
        args.append(f"--force-with-lease=refs/heads/{branch}:{lease}")
    elif remote_at is None:
        args.append(f"--force-with-lease=refs/heads/{branch}:")  # must still be absent
    _remote_git(work.repo, url, credential, protocols,
                [*args, "--", url, f"{work.after}:refs/heads/{branch}"], timeout)  # fmt: skip
    _git(work.repo, "update-ref", f"{PUBLISHED_REFS}{branch}", work.after)


def is_branch(repo: Path, name: str) -> bool:
    """Whether ``repo`` (the upstream's cache, a mirror) has a branch ``name``."""
    try:
        _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options",
             f"refs/heads/{name}^{{commit}}")  # fmt: skip
    except GitError:
        return False
    return True
