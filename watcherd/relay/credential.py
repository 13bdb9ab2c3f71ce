"""The relays' one credential: a self-signed certificate and its private key in one PEM
file, which the daemon and every relay hold. Each end of a channel proves it holds the file
(mutual TLS, each trusting that one certificate and nothing else), so nothing without it can
serve a job's sockets or reach them, and what crosses the network between nodes is
encrypted."""

from __future__ import annotations

import datetime
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NAME = "watcherd-relay"


class CredentialError(ValueError):
    pass


def ensure_credential(path: Path) -> Path:
    """The credential at ``path``, made (mode 0600) if there is none yet."""
    if path.exists():
        return path
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=100 * 365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + certificate.public_bytes(serialization.Encoding.PEM)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
        out.flush()
        os.fsync(out.fileno())
    try:
        os.link(partial, path)  # never over one another daemon made meanwhile
    except FileExistsError:
        pass
    finally:
        partial.unlink()
    return path


def server_context(path: Path) -> ssl.SSLContext:
    return _context(ssl.PROTOCOL_TLS_SERVER, path)


def client_context(path: Path) -> ssl.SSLContext:
    context = _context(ssl.PROTOCOL_TLS_CLIENT, path)
    context.check_hostname = False  # the one trusted certificate is the check
    return context


def _context(protocol: int, path: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise CredentialError(
                f"{path}: the relay credential holds a private key; it must be readable by "
                f"its owner only (chmod 600), not mode {mode & 0o777:o}"
            )
        context.load_cert_chain(path)
        context.load_verify_locations(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise CredentialError(f"{path}: not a usable relay credential ({exc})") from exc
    return context
