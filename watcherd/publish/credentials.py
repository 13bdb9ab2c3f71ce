"""The forge credentials: read by the daemon from private files when it publishes, held in
memory only while it does, and never written, logged or shown.

A token reaches git through a pipe (watcherd/publish/branch.py), the forge's API in a
header; it is in no URL, argument, environment variable or file of the daemon's making.
A GitHub App's key signs a JWT (RS256) through ``openssl``, which reads the key from a
pipe too; the JWT buys a one-hour installation token limited to the job's repository.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import time
from pathlib import Path

MAX_CREDENTIAL_BYTES = 64 * 1024


class CredentialError(Exception):
    """No usable credential: the reason, naming the file (never its content)."""


class Secret:
    """A credential's value: shown as ``***`` however it is printed or logged."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def scrub(self, text: str) -> str:
        """``text`` with this secret (should it be there) replaced by ***."""
        return text.replace(self._value, "***") if self._value else text


def read_private_file(path: Path, what: str) -> bytes:
    """A credential file's bytes: a regular file (not through a link) that neither the
    group nor others may read or write; CredentialError otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise CredentialError(f"{what} {path}: cannot read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialError(f"{what} {path}: not a regular file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CredentialError(
                f"{what} {path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read or "
                "change it; chmod 600 it (it is refused until then)"
            )
        data = os.read(fd, MAX_CREDENTIAL_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CREDENTIAL_BYTES:
        raise CredentialError(f"{what} {path}: larger than {MAX_CREDENTIAL_BYTES} bytes")
    return data


def read_token(path: Path) -> Secret:
    """The token in a 0600 file: its first non-empty line (a ``NAME=`` prefix is dropped)."""
    text = read_private_file(path, "token_file").decode("utf-8", "replace")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" in line:
            line = line.split("=", 1)[1].strip().strip("'\"")
        if not line.isascii() or not line.isprintable() or " " in line:
            raise CredentialError(
                f"token_file {path}: the token is not one word of printable ASCII"
            )
        return Secret(line)
    raise CredentialError(f"token_file {path}: no token in it")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def app_jwt(app_id: str, key_file: Path, now: float | None = None) -> Secret:
    """A GitHub App's JSON Web Token (RS256, ten minutes at most, as GitHub asks), signed by
    ``openssl`` with the private key it reads from a pipe."""
    key = read_private_file(key_file, "app_key_file")
    issued = int(now if now is not None else time.time()) - 60  # the forge's clock may lag
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = _b64url(json.dumps({"iat": issued, "exp": issued + 540, "iss": app_id}).encode())
    signing_input = f"{header}.{claims}".encode()
    read_end, write_end = os.pipe()
    try:
        if len(key) >= 65536:  # a pipe holds 64 KiB; an RSA key is 2-3 KiB
            raise CredentialError(f"app_key_file {key_file}: too large for a private key")
        os.write(write_end, key)
        os.close(write_end)
        write_end = -1
        try:
            done = subprocess.run(
                ["openssl", "dgst", "-sha256", "-sign", f"/dev/fd/{read_end}"],
                input=signing_input, capture_output=True, pass_fds=(read_end,), timeout=30,
                check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CredentialError(f"cannot sign the App's token with openssl: {exc}") from None
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    if done.returncode != 0 or not done.stdout:
        raise CredentialError(
            f"app_key_file {key_file}: openssl could not sign with it (is it the App's PEM "
            "private key?)"
        )
    return Secret(f"{header}.{claims}.{_b64url(done.stdout)}")
