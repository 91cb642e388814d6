"""TLS and mutual TLS from PEM files (REPOGATE_TLS_*)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

    from server.settings import Settings

# cryptography (9 MiB of RSS) is imported only where the files are checked, which
# happens when TLS is configured.


class Certificates:
    """The server's certificate, key and client CA, served so that they can be replaced:
    after `reload()`, new handshakes get the new certificate while open connections go on
    (grpc's dynamic credentials ask `_fetch` at each handshake)."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None) -> None:
        self.files = tuple(p for p in (cert_file, key_file, client_ca_file) if p is not None)
        self._cert_file, self._key_file, self._client_ca_file = cert_file, key_file, client_ca_file
        self._initial = self._load()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()  # _fetch runs on gRPC's threads

    @classmethod
    def from_settings(cls, s: Settings) -> Certificates | None:
        """None: plaintext."""
        if s.tls_cert_file is None or s.tls_key_file is None:
            return None
        return cls(s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file)

    def credentials(self) -> grpc.ServerCredentials:
        """With a client CA, every client must present a certificate it signed."""
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            self._fetch,
            require_client_authentication=self._client_ca_file is not None,
        )

    def reload(self) -> None:
        """Reads the files again; ValueError (and the old ones stay) unless they are valid."""
        loaded = self._load()
        with self._lock:
            self._pending = loaded

    def _load(self) -> grpc.ServerCertificateConfiguration:
        # Each file read once and what was read checked: a file replaced meanwhile cannot
        # slip a key that is not the certificate's past the check.
        cert, key, client_ca = read_checked(self._cert_file, self._key_file, self._client_ca_file)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """At each handshake, on a gRPC thread: the new configuration once, else None
        (keep the current one)."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending


def check_files(cert_file: Path, key_file: Path, client_ca_file: Path | None) -> None:
    """ValueError unless the files hold a certificate chain, its unencrypted private key,
    and CA certificates. gRPC itself would only say it failed to bind."""
    read_checked(cert_file, key_file, client_ca_file)


def read_checked(
    cert_file: Path,
    key_file: Path,
    ca_file: Path | None,
    ca_variable: str = "REPOGATE_TLS_CLIENT_CA_FILE",
) -> tuple[bytes, bytes, bytes | None]:
    """The files' PEM, each read once, and checked (see check_files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_pem = _read(cert_file, "REPOGATE_TLS_CERT_FILE")
    chain = _parsed(x509.load_pem_x509_certificates, cert_pem, "REPOGATE_TLS_CERT_FILE")
    pem = _read(key_file, "REPOGATE_TLS_KEY_FILE")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("REPOGATE_TLS_KEY_FILE holds no unencrypted PEM private key") from exc
    if _spki(key.public_key()) != _spki(chain[0].public_key()):
        raise ValueError(
            "REPOGATE_TLS_KEY_FILE is not the key of the first certificate "
            "in REPOGATE_TLS_CERT_FILE"
        )
    if ca_file is None:
        return cert_pem, pem, None
    ca_pem = _read(ca_file, ca_variable)
    _parsed(x509.load_pem_x509_certificates, ca_pem, ca_variable)
    return cert_pem, pem, ca_pem


def check_ca_file(path: Path, variable: str) -> None:
    """ValueError unless the file holds PEM certificates."""
    _certificates(path, variable)


def _certificates(path: Path, variable: str) -> list[x509.Certificate]:
    from cryptography import x509

    return _parsed(x509.load_pem_x509_certificates, _read(path, variable), variable)


def _parsed(
    load: Callable[[bytes], list[x509.Certificate]], pem: bytes, variable: str
) -> list[x509.Certificate]:
    try:
        return load(pem)
    except ValueError as exc:
        raise ValueError(f"{variable} holds no PEM certificate") from exc


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{variable}: cannot read {path}: {exc.strerror}") from exc


def _spki(key: PublicKeyTypes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
