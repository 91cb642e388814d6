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


def credentials(s: Settings) -> grpc.ServerCredentials | None:
    """None: plaintext. With a client CA, every client must present a certificate it signed."""
    if s.tls_cert_file is None or s.tls_key_file is None:
        return None
    client_ca = None if s.tls_client_ca_file is None else s.tls_client_ca_file.read_bytes()
    return grpc.ssl_server_credentials(
        [(s.tls_key_file.read_bytes(), s.tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


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
