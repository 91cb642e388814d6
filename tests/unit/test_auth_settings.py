"""Settings for authentication and TLS: what goes together, and files checked at start."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from server.auth import check_listen
from server.settings import Settings
from tests.pki import Authority, Issued, rsa_key_pair

pytestmark = pytest.mark.unit

SECRET = "a-shared-secret-of-thirty-two-chars!"


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    digest = hashlib.sha256(b"k").hexdigest()
    path.write_text(f'{{"keys": {{"a": {{"sha256": "{digest}", "tenants": ["acme"]}}}}}}')
    return path


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path, "ca")


def refused(message: str, **fields: Any) -> ValidationError:
    with pytest.raises(ValidationError, match=re.escape(message)) as err:
        Settings(**fields)
    return err.value


# Authentication


def test_authentication_is_off_by_default() -> None:
    settings = Settings()

    assert settings.auth_mode == "none"
    assert settings.auth_kinds() == frozenset()
    assert settings.access_log is True


@pytest.mark.parametrize(
    ("mode", "kinds"),
    [("keys", {"keys"}), ("JWT", {"jwt"}), ("jwt, keys", {"keys", "jwt"}), (" none ", set())],
)
def test_auth_mode_is_normalised(keys_file: Path, mode: str, kinds: set[str]) -> None:
    fields: dict[str, Any] = {}
    if "keys" in kinds:
        fields["api_keys_file"] = keys_file
    if "jwt" in kinds:
        fields["jwt_secret"] = SECRET

    assert Settings(auth_mode=mode, **fields).auth_kinds() == kinds


def test_an_unknown_auth_mode_is_refused() -> None:
    refused("must be none, keys, jwt, or keys,jwt", auth_mode="basic")


def test_keys_and_their_file_go_together(keys_file: Path) -> None:
    refused("REPOGATE_API_KEYS_FILE is needed when", auth_mode="keys")
    refused("REPOGATE_API_KEYS_FILE is needed when", api_keys_file=keys_file)


def test_jwt_needs_one_key(tmp_path: Path) -> None:
    _, public = rsa_key_pair()
    (tmp_path / "jwt.pub").write_bytes(public)

    refused("REPOGATE_AUTH_MODE including jwt needs", auth_mode="jwt")
    refused("REPOGATE_AUTH_MODE including jwt needs", jwt_secret=SECRET)
    refused(
        "set one of REPOGATE_JWT_SECRET",
        auth_mode="jwt",
        jwt_secret=SECRET,
        jwt_public_key_file=tmp_path / "jwt.pub",
    )
    assert Settings(auth_mode="jwt", jwt_public_key_file=tmp_path / "jwt.pub").auth_kinds()


def test_jwks_and_discovery_are_jwt_keys_too() -> None:
    assert Settings(auth_mode="jwt", jwt_jwks_url="https://idp.example/jwks.json").auth_kinds()
    assert Settings(
        auth_mode="jwt", jwt_oidc_discovery=True, jwt_issuer="https://idp.example"
    ).auth_kinds()
    refused(
        "REPOGATE_JWT_OIDC_DISCOVERY needs REPOGATE_JWT_ISSUER",
        auth_mode="jwt",
        jwt_oidc_discovery=True,
    )
    refused("set one of", auth_mode="jwt", jwt_secret=SECRET, jwt_jwks_url="https://idp/j")
    with pytest.raises(ValidationError, match="must be an https:// URL"):
        Settings(auth_mode="jwt", jwt_jwks_url="ftp://idp/jwks")


def test_a_short_secret_is_refused_without_being_quoted() -> None:
    error = refused("at least 32", auth_mode="jwt", jwt_secret="hunter2-hunter2")

    assert "hunter2" not in str(error)


def test_no_settings_error_quotes_a_value() -> None:
    # A model-level error would otherwise print every field given, secrets included.
    error = refused(
        "REPOGATE_API_KEYS_FILE is needed", auth_mode="keys", page_token_secret="s3cret-" * 4
    )

    assert "s3cret" not in str(error)


def test_a_public_key_file_must_hold_an_rsa_public_key(tmp_path: Path, ca: Authority) -> None:
    private, _ = rsa_key_pair()
    (tmp_path / "private.pem").write_bytes(private)
    ec_public = ca.cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "ec.pub").write_bytes(ec_public)

    refused(
        "holds no PEM public key", auth_mode="jwt", jwt_public_key_file=tmp_path / "private.pem"
    )
    refused("not an RSA one", auth_mode="jwt", jwt_public_key_file=tmp_path / "ec.pub")


def test_a_bad_keys_file_is_a_settings_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"keys": {"a": {"sha256": "my-plaintext-key", "tenants": ["acme"]}}}')

    error = refused("keys.a.sha256 must be", auth_mode="keys", api_keys_file=path)

    assert "my-plaintext-key" not in str(error)


def test_empty_values_mean_unset() -> None:
    settings = Settings(jwt_secret="", api_keys_file="", tls_cert_file="", tls_key_file="")

    assert (settings.jwt_secret, settings.api_keys_file, settings.tls_cert_file) == (None,) * 3


# Listening beyond loopback


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051"])
def test_the_network_without_authentication_is_refused(listen: str) -> None:
    with pytest.raises(PermissionError, match="REPOGATE_ALLOW_UNAUTHENTICATED_NETWORK=true"):
        check_listen(Settings(listen=listen))


def test_the_network_is_allowed_when_authenticated_or_told(keys_file: Path, ca: Authority) -> None:
    server = ca.server()
    for fields in (
        {"allow_unauthenticated_network": True},
        {"auth_mode": "keys", "api_keys_file": keys_file},
        {
            "tls_cert_file": server.cert_file,
            "tls_key_file": server.key_file,
            "tls_client_ca_file": ca.cert_file,
        },
    ):
        check_listen(Settings(listen="0.0.0.0:50051", **fields))


def test_tls_without_client_certificates_is_not_authentication(ca: Authority) -> None:
    server = ca.server()

    with pytest.raises(PermissionError):
        check_listen(Settings(listen="0.0.0.0:1", **tls(server)))


# TLS


def tls(server: Issued) -> dict[str, Path]:
    return {"tls_cert_file": server.cert_file, "tls_key_file": server.key_file}


def test_a_key_that_is_not_the_certificates_is_refused(ca: Authority) -> None:
    one, two = ca.server("one"), ca.server("two")

    refused(
        "not the key of the first certificate",
        tls_cert_file=one.cert_file,
        tls_key_file=two.key_file,
    )


def test_files_that_hold_no_pem_are_refused(ca: Authority, tmp_path: Path) -> None:
    server = ca.server()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")

    refused(
        "REPOGATE_TLS_CERT_FILE holds no PEM certificate",
        tls_cert_file=junk,
        tls_key_file=server.key_file,
    )
    refused(
        "REPOGATE_TLS_KEY_FILE holds no unencrypted PEM",
        tls_cert_file=server.cert_file,
        tls_key_file=server.cert_file,
    )
    refused("REPOGATE_TLS_CLIENT_CA_FILE holds no PEM", **tls(server), tls_client_ca_file=junk)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tls_cert_file"}, "go together"),
        ({"tls_key_file"}, "go together"),
        ({"tls_client_ca_file"}, "needs REPOGATE_TLS_CERT_FILE"),
    ],
)
def test_incomplete_tls_settings_are_refused(ca: Authority, fields: set[str], message: str) -> None:
    files = {**tls(ca.server()), "tls_client_ca_file": ca.cert_file}

    refused(message, **{name: files[name] for name in fields})


def test_a_missing_file_is_refused(tmp_path: Path, ca: Authority) -> None:
    refused(
        "tls_cert_file", tls_cert_file=tmp_path / "absent.crt", tls_key_file=ca.server().key_file
    )
