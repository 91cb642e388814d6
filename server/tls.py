"""TLS and mutual TLS from PEM files (REPOGATE_TLS_*)."""

from __future__ import annotations

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
        self._pending = self._load()

    def _load(self) -> grpc.ServerCertificateConfiguration:
        check_files(self._cert_file, self._key_file, self._client_ca_file)
        client_ca = None if self._client_ca_file is None else self._client_ca_file.read_bytes()
        return grpc.ssl_server_certificate_configuration(
            [(self._key_file.read_bytes(), self._cert_file.read_bytes())],
            root_certificates=client_ca,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """At each handshake, on a gRPC thread: the new configuration once, else None
        (keep the current one)."""
        pending, self._pending = self._pending, None
        return pending


def check_files(cert_file: Path, key_file: Path, client_ca_file: Path | None) -> None:
    """ValueError unless the files hold a certificate chain, its unencrypted private key,
    and CA certificates. gRPC itself would only say it failed to bind."""
    from cryptography.hazmat.primitives import serialization

    chain = _certificates(cert_file, "REPOGATE_TLS_CERT_FILE")
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
    if client_ca_file is not None:
        _certificates(client_ca_file, "REPOGATE_TLS_CLIENT_CA_FILE")


def check_ca_file(path: Path, variable: str) -> None:
    """ValueError unless the file holds PEM certificates."""
    _certificates(path, variable)


def _certificates(path: Path, variable: str) -> list[x509.Certificate]:
    from cryptography import x509

    pem = _read(path, variable)
    try:
        return x509.load_pem_x509_certificates(pem)
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
