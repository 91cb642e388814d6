"""A call's `authorization` metadata, read into a verified Principal.

`Bearer <token>` carries a JWT, or an API key when JWTs are off or the token is
not JWT-shaped (three dot-separated parts); `ApiKey <key>` always an API key.
The scheme is case-insensitive. Neither the header nor the credential is ever
repeated in an error or a log line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from repositories.errors import Unauthenticated
from server.auth.keys import ApiKeys
from server.auth.principal import Principal

if TYPE_CHECKING:
    from server.auth.tokens import Tokens

AUTHORIZATION_KEY = "authorization"
_SCHEMES = ("bearer", "apikey")


class Authenticator:
    def __init__(self, keys: ApiKeys | None, tokens: Tokens | None) -> None:
        self._keys = keys
        self._tokens = tokens

    @property
    def keys(self) -> ApiKeys | None:
        return self._keys

    @property
    def tokens(self) -> Tokens | None:
        return self._tokens

    async def authenticate(self, metadata: Iterable[tuple[str, str | bytes]]) -> Principal:
        """The caller's principal; UNAUTHENTICATED when the credential is missing or bad."""
        header = next((v for k, v in metadata if k == AUTHORIZATION_KEY), None)
        if not header or not isinstance(header, str):
            raise Unauthenticated(
                "this call needs authorization metadata: 'Bearer <token>' or 'ApiKey <key>'",
                reason="CREDENTIALS_MISSING",
            )
        scheme, _, credential = header.strip().partition(" ")
        scheme, credential = scheme.lower(), credential.strip()
        if scheme not in _SCHEMES or not credential:
            raise Unauthenticated(
                "authorization must be 'Bearer <token>' or 'ApiKey <key>'",
                reason="CREDENTIALS_INVALID",
            )
        # A JWT has three dot-separated parts; a key made as the README says has none.
        jwt_shaped = credential.count(".") == 2
        if scheme == "bearer" and self._tokens is not None and (jwt_shaped or self._keys is None):
            return await self._tokens.verify(credential)
        if self._keys is None:
            raise Unauthenticated("this server takes no API keys", reason="CREDENTIALS_INVALID")
        return self._keys.verify(credential)
