"""API tokens: a 0600 file of names, scopes and SHA-256 hashes (never the tokens).

    tokens:
      - name: ci-bot
        scopes: [read, submit]
        sha256: 3f0c...

A token is shown once, when ``watcherd token add`` makes it. The file is read again when it
changes, so a removed token stops working (and its page sessions end) without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

from watcherd.util.fsutil import write_atomic
from watcherd.util.yamlsafe import load as load_yaml

SCOPES = ("read", "submit", "admin")  # admin: cancel and retry; each implies read
TOKEN_PREFIX = "wdt_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class TokenFileError(ValueError):
    """The tokens file is unsafe or malformed; the message says which and how."""


@dataclass(frozen=True)
class Token:
    name: str
    scopes: frozenset[str]
    digest: bytes

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or (scope == "read" and bool(self.scopes))


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenStore:
    """The tokens in one file, read again whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._tokens: tuple[Token, ...] = ()
        self._lock = threading.Lock()

    def tokens(self) -> tuple[Token, ...]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return ()
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if signature != self._seen:
                self._tokens = read_tokens(self.path)
                self._seen = signature
            return self._tokens

    def find(self, presented: str) -> Token | None:
        """The token ``presented`` is, compared in constant time against every hash."""
        wanted = digest(presented)
        found = None
        for token in self.tokens():
            if hmac.compare_digest(token.digest, wanted):
                found = token  # no early exit: the time does not depend on which
        return found

    def named(self, name: str) -> Token | None:
        return next((t for t in self.tokens() if t.name == name), None)


def read_tokens(path: Path) -> tuple[Token, ...]:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise TokenFileError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise TokenFileError(f"{path}: readable by others (mode {st.st_mode & 0o777:o}); "
                             f"chmod 600 {path}")  # fmt: skip
    data = load_yaml(path.read_text(encoding="utf-8")) or {}
    entries = data.get("tokens", []) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise TokenFileError(f"{path}: expected 'tokens:' with a list of entries")
    tokens = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise TokenFileError(f"{path}: token {number}: expected a mapping")
        name, scopes, hexdigest = entry.get("name"), entry.get("scopes"), entry.get("sha256")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise TokenFileError(f"{path}: token {number}: name must be 1-64 letters, digits, "
                                 "'.', '_' or '-'")  # fmt: skip
        if not isinstance(scopes, list) or not scopes or not set(scopes) <= set(SCOPES):
            raise TokenFileError(f"{path}: token {name}: scopes must be a list of "
                                 f"{', '.join(SCOPES)}")  # fmt: skip
        if not isinstance(hexdigest, str) or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
            raise TokenFileError(f"{path}: token {name}: sha256 must be 64 hex digits")
        tokens.append(Token(name, frozenset(scopes), bytes.fromhex(hexdigest)))
    return tuple(tokens)


def add_token(path: Path, name: str, scopes: list[str]) -> str:
    """Make a token, store its hash under ``name`` and return it (shown once)."""
    if not _NAME.fullmatch(name):
        raise TokenFileError(f"name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise TokenFileError(f"scopes must be among {', '.join(SCOPES)}, got {scopes!r}")
    existing = read_tokens(path) if path.exists() else ()
    if any(token.name == name for token in existing):
        raise TokenFileError(f"a token named {name!r} exists; remove it first")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    entries = [_entry(t) for t in existing]
    entries.append({"name": name, "scopes": sorted(set(scopes)), "sha256": digest(token).hex()})
    _write(path, entries)
    return token


def remove_token(path: Path, name: str) -> bool:
    existing = read_tokens(path) if path.exists() else ()
    kept = [_entry(t) for t in existing if t.name != name]
    if len(kept) == len(existing):
        return False
    _write(path, kept)
    return True


def _entry(token: Token) -> dict[str, object]:
    return {"name": token.name, "scopes": sorted(token.scopes), "sha256": token.digest.hex()}


def _write(path: Path, entries: list[dict[str, object]]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, yaml.safe_dump({"tokens": entries}, sort_keys=False).encode(), 0o600)
