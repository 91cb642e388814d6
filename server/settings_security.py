"""The authentication and TLS part of Settings (server/settings.py), and its reloading."""

from __future__ import annotations

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings

from server.settings_sources import FROM_FILE


class SecuritySettings(BaseSettings):
    """Who may call, with which credentials, over which TLS. Only ever used as the base of
    Settings, which holds the configuration of both."""

    # Who may call: "none" (whoever can connect: a sidecar on loopback), or callers with
    # API keys, JWTs, or either: "keys", "jwt", "keys,jwt".
    auth_mode: str = "none"
    # API keys' SHA-256 digests, each with its tenants and scopes: JSON, or TOML (.toml).
    api_keys_file: FilePath | None = None
    # JWTs are HS256 with this shared secret, or RS256 with the RSA public key in this file,
    # or signed with a key of the JSON Web Key Set at this https:// URL (an IdP's jwks_uri).
    jwt_secret: SecretStr | None = Field(None, min_length=32, json_schema_extra=FROM_FILE)
    jwt_public_key_file: FilePath | None = None
    jwt_jwks_url: str | None = None
    # Seconds the key set is kept before it is fetched again; a token naming a key (kid)
    # not in it fetches it at once, but at most once per jwt_jwks_refetch_interval.
    jwt_jwks_ttl: float = Field(300.0, gt=0)
    jwt_jwks_refetch_interval: float = Field(10.0, ge=0)
    # The key set is the jwks_uri of the OpenID Connect discovery document of jwt_issuer
    # (its /.well-known/openid-configuration), instead of jwt_jwks_url.
    jwt_oidc_discovery: bool = False
    # When set, a token's aud (iss) must be this.
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # The claim listing the tenants a token may act for (a list, or "*").
    jwt_tenants_claim: str = Field("tenants", min_length=1)
    # Seconds of clock skew forgiven on exp and nbf.
    jwt_leeway: float = Field(30.0, ge=0, le=300)
    # Whether "*" in a key's or a token's tenants means every tenant. True by default, as
    # before it existed; false refuses such tokens and makes such keys a settings error.
    auth_allow_any_tenant: bool = True
    # Listening beyond loopback with authentication off is refused unless this is true.
    allow_unauthenticated_network: bool = False
    # TLS with this certificate chain and key (PEM); with a client CA, mutual TLS:
    # every client must present a certificate that CA signed.
    tls_cert_file: FilePath | None = None
    tls_key_file: FilePath | None = None
    tls_client_ca_file: FilePath | None = None
    # CA certificate(s) a peer's certificate is checked against when a call is forwarded
    # to it over TLS; unset: the client CA, else the system's roots.
    tls_peer_ca_file: FilePath | None = None
    # Seconds between looks at the keys file, JWT key and TLS files (and secret files
    # of JWT secrets) for changes, which are then loaded; SIGHUP loads them at once.
    # 0: only on SIGHUP.
    reload_interval: float = Field(10.0, ge=0)

    @field_validator(
        "api_keys_file",
        "jwt_secret",
        "jwt_public_key_file",
        "jwt_jwks_url",
        "jwt_audience",
        "jwt_issuer",
        "tls_cert_file",
        "tls_key_file",
        "tls_client_ca_file",
        "tls_peer_ca_file",
        mode="before",
    )
    @classmethod
    def _empty_security_setting_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("auth_mode")
    @classmethod
    def _auth_kinds(cls, value: str) -> str:
        kinds = {kind.strip().lower() for kind in value.split(",")}
        if kinds == {"none"}:
            return "none"
        if not kinds <= {"keys", "jwt"}:
            raise ValueError("must be none, keys, jwt, or keys,jwt")
        return ",".join(kind for kind in ("keys", "jwt") if kind in kinds)

    @model_validator(mode="after")
    def _auth_and_tls_complete(self) -> SecuritySettings:
        # Imported here: server.auth pulls in the interceptors; settings stay a leaf.
        from server import tls
        from server.auth.keys import ApiKeys

        kinds = self.auth_kinds()
        if ("keys" in kinds) != (self.api_keys_file is not None):
            raise ValueError(
                "REPOGATE_API_KEYS_FILE is needed when, and only when, "
                "REPOGATE_AUTH_MODE includes keys"
            )
        discovery = self.jwt_oidc_discovery or None
        jwt_keys = [self.jwt_secret, self.jwt_public_key_file, self.jwt_jwks_url, discovery]
        if ("jwt" in kinds) != any(key is not None for key in jwt_keys):
            raise ValueError(
                "REPOGATE_AUTH_MODE including jwt needs REPOGATE_JWT_SECRET (HS256), "
                "REPOGATE_JWT_PUBLIC_KEY_FILE (RS256), REPOGATE_JWT_JWKS_URL or "
                "REPOGATE_JWT_OIDC_DISCOVERY=true, and they are unused without it"
            )
        if sum(key is not None for key in jwt_keys) > 1:
            raise ValueError(
                "set one of REPOGATE_JWT_SECRET, REPOGATE_JWT_PUBLIC_KEY_FILE, "
                "REPOGATE_JWT_JWKS_URL and REPOGATE_JWT_OIDC_DISCOVERY"
            )
        if self.jwt_oidc_discovery and not (self.jwt_issuer or "").startswith(
            ("https://", "http://")
        ):
            raise ValueError(
                "REPOGATE_JWT_OIDC_DISCOVERY needs REPOGATE_JWT_ISSUER, the issuer's https:// URL"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("REPOGATE_TLS_CERT_FILE and REPOGATE_TLS_KEY_FILE go together")
        for name in ("tls_client_ca_file", "tls_peer_ca_file"):
            if getattr(self, name) is not None and self.tls_cert_file is None:
                raise ValueError(f"REPOGATE_{name.upper()} needs REPOGATE_TLS_CERT_FILE")
        # Read the files now, so that a bad one is a settings error, not a failed start.
        if self.api_keys_file is not None:
            ApiKeys.load(self.api_keys_file, allow_any_tenant=self.auth_allow_any_tenant)
        if self.jwt_public_key_file is not None:
            # Only here: PyJWT and cryptography add 11 MiB to a server that needs neither.
            from server.auth.tokens import load_public_key

            load_public_key(self.jwt_public_key_file)
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            tls.check_files(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)
            if self.tls_peer_ca_file is not None:
                tls.check_ca_file(self.tls_peer_ca_file, "REPOGATE_TLS_PEER_CA_FILE")
        return self

    @field_validator("jwt_jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an https:// URL (or http:// on a trusted network)")
        return value

    def auth_kinds(self) -> frozenset[str]:
        """The credentials accepted: empty when authentication is off."""
        return frozenset() if self.auth_mode == "none" else frozenset(self.auth_mode.split(","))
