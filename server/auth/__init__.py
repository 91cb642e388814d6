"""Authentication: who is calling, and may they act for this tenant?

Off by default: Repogate as a sidecar on loopback trusts whoever can connect.
On (REPOGATE_AUTH_MODE), every call to a Repogate service must carry an API key
or a JWT bound to the call's tenant; health and reflection stay open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grpc import aio

from server.auth.credentials import AUTHORIZATION_KEY, Authenticator
from server.auth.interceptor import AuthInterceptor
from server.auth.keys import ApiKeys
from server.auth.network import check_listen, is_local
from server.auth.principal import ADMIN_ONLY, ADMIN_SCOPE, Principal, authorize

if TYPE_CHECKING:
    from server.auth.tokens import Tokens
    from server.reload import Reloadable
    from server.settings import Settings

__all__ = [
    "ADMIN_ONLY",
    "ADMIN_SCOPE",
    "AUTHORIZATION_KEY",
    "AuthInterceptor",
    "Authenticator",
    "Principal",
    "authenticator",
    "authorize",
    "check_listen",
    "interceptors",
    "is_local",
    "reloadables",
]


def interceptors(s: Settings) -> list[aio.ServerInterceptor]:
    """What to list after the RequestInterceptor: nothing when authentication is off."""
    found = authenticator(s)
    return [] if found is None else [AuthInterceptor(found)]


def authenticator(s: Settings) -> Authenticator | None:
    kinds = s.auth_kinds()
    if not kinds:
        return None
    keys = (
        ApiKeys.load(s.api_keys_file, allow_any_tenant=s.auth_allow_any_tenant)
        if "keys" in kinds and s.api_keys_file
        else None
    )
    return Authenticator(keys, _tokens(s) if "jwt" in kinds else None)


def _tokens(s: Settings) -> Tokens:
    # Imported only for JWTs: PyJWT loads cryptography, 11 MiB of RSS.
    from server.auth.tokens import Rules, Tokens

    rules = Rules(
        s.jwt_audience, s.jwt_issuer, s.jwt_leeway, s.jwt_tenants_claim, s.auth_allow_any_tenant
    )
    if s.jwt_public_key_file is not None:
        return Tokens.rs256(s.jwt_public_key_file, rules)
    if s.jwt_jwks_url is not None or s.jwt_oidc_discovery:
        from server.auth.jwks import Jwks

        jwks = Jwks(
            s.jwt_jwks_url,
            s.jwt_jwks_ttl,
            s.jwt_jwks_refetch_interval,
            issuer=s.jwt_issuer if s.jwt_oidc_discovery else None,
        )
        return Tokens(jwks, rules)
    assert s.jwt_secret is not None, "Settings require a secret, a public key or a JWKS for jwt"
    # From its file when it came from one, so that a rotated file is read again on reload.
    return Tokens.hs256(s.secret_file("jwt_secret") or s.jwt_secret.get_secret_value(), rules)


def reloadables(found: Authenticator | None) -> list[Reloadable]:
    """The authenticator's key material that SIGHUP (or a changed file) loads again."""
    if found is None:
        return []
    items: list[Reloadable] = []
    if found.keys is not None:
        items.append(found.keys)
    if found.tokens is not None:
        items.append(found.tokens.keys)
    return items
