"""JSON Web Tokens: HS256 with a shared secret, RS256 with an RSA public key, or a key of a
JSON Web Key Set (server/auth/jwks.py).

A token must carry `exp`; `nbf`, and `aud` / `iss` when configured, are checked
too, with a small leeway for clock skew. The tenants it may act for are in a
claim (`tenants` by default: a list, or "*"), its scopes in `scope`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from repositories.errors import Unauthenticated
from server.auth.principal import Principal, parse_scopes, parse_tenants


@dataclass(frozen=True, slots=True)
class Rules:
    """What a token must satisfy besides its signature."""

    audience: str | None = None
    issuer: str | None = None
    leeway: float = 30.0
    tenants_claim: str = "tenants"
    # Whether "*" in the tenants claim means every tenant; if not, such a token is refused.
    allow_any_tenant: bool = True


# The claims RFC 7519 makes NumericDates.
_NUMERIC_DATES = ("exp", "nbf", "iat")


class KeySource(Protocol):
    """Where the key that verifies a token comes from."""

    @property
    def files(self) -> tuple[Path, ...]:
        """The files the keys are read from, watched for changes (server/reload.py)."""
        ...

    async def key_for(self, token: str) -> tuple[Any, str]:
        """The key and its one algorithm; UNAUTHENTICATED when there is none for `token`."""
        ...

    def reload(self) -> None:
        """Loads the keys again (SIGHUP); raises, keeping the old ones, when that fails."""
        ...


class StaticKey:
    """One key, read by `load`; `reload()` reads it again (a rotated file)."""

    def __init__(self, load: Callable[[], Any], algorithm: str, files: tuple[Path, ...] = ()):
        self._load = load
        self._key = load()
        self._algorithm = algorithm
        self.files = files

    async def key_for(self, token: str) -> tuple[Any, str]:
        return self._key, self._algorithm

    def reload(self) -> None:
        """Reads the key again; raises (keeping the old key) if it cannot be read."""
        self._key = self._load()


class Tokens:
    def __init__(self, keys: KeySource, rules: Rules) -> None:
        # One algorithm per key, fixed by the key and never taken from the token
        # (RFC 8725 2.1).
        self.keys = keys
        self._rules = rules

    @classmethod
    def hs256(cls, secret: str | Path, rules: Rules) -> Tokens:
        """With the secret, or the secret in a file (REPOGATE_JWT_SECRET_FILE) read again
        on reload."""
        if isinstance(secret, Path):
            path = secret
            return cls(StaticKey(lambda: _read_secret(path), "HS256", (path,)), rules)
        return cls(StaticKey(lambda: secret, "HS256"), rules)

    @classmethod
    def rs256(cls, public_key_file: Path, rules: Rules) -> Tokens:
        key = StaticKey(lambda: load_public_key(public_key_file), "RS256", (public_key_file,))
        return cls(key, rules)

    async def verify(self, token: str) -> Principal:
        """The token's principal; UNAUTHENTICATED if it does not verify."""
        key, algorithm = await self.keys.key_for(token)
        rules = self._rules
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=rules.audience,
                issuer=rules.issuer,
                leeway=rules.leeway,
                options={"require": ["exp"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the token has expired", reason="TOKEN_EXPIRED") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(_refusal(exc), reason="CREDENTIALS_INVALID") from exc
        for claim in _NUMERIC_DATES:
            if claim in claims and not _numeric_date(claims[claim]):
                raise Unauthenticated(
                    f"the token's {claim!r} claim is not a NumericDate (a number of seconds)",
                    reason="CREDENTIALS_INVALID",
                )
        try:
            tenants = parse_tenants(
                claims.get(rules.tenants_claim, []), allow_any=rules.allow_any_tenant
            )
        except ValueError as exc:
            raise Unauthenticated(
                f"the token's {rules.tenants_claim!r} claim is not valid: {exc}",
                reason="CREDENTIALS_INVALID",
            ) from exc
        sub = claims.get("sub")
        name = f"jwt:{sub}" if isinstance(sub, str) and sub else "jwt"
        return Principal(tenants, parse_scopes(claims.get("scope")), name)


def _numeric_date(value: object) -> bool:
    """RFC 7519's NumericDate: a JSON number. PyJWT reads exp, nbf and iat with int(),
    which also takes "1767225600" and true."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _refusal(exc: jwt.PyJWTError) -> str:
    """Why a token was refused, in words of our own: PyJWT's could change, ours never quote it."""
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet (nbf)"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the token is not meant for this server (aud)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the token's issuer is not trusted (iss)"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token has no {exc.claim!r} claim"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the token's signature does not verify"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "the token is not signed with the algorithm this server accepts"
    return "the token is malformed"


def load_public_key(path: Path) -> rsa.RSAPublicKey:
    """The RSA public key in a PEM file; ValueError if it holds none."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} holds no PEM public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{path} holds a public key, but not an RSA one (RS256 needs RSA)")
    return key


# HS256 keys shorter than this are refused (RFC 7518 3.2: at least the hash's size).
MIN_SECRET_LENGTH = 32


def _read_secret(path: Path) -> str:
    from server.settings_sources import read_secret

    secret = read_secret("REPOGATE_JWT_SECRET_FILE", path)
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"REPOGATE_JWT_SECRET_FILE: the secret must be at least {MIN_SECRET_LENGTH} characters"
        )
    return secret
