"""Opaque, signed page tokens (AIP-158).

A token carries a keyset position and a digest of the query it belongs to
(resource, tenant, and later filter and order), signed with HMAC-SHA256.
Edited, truncated or replayed-elsewhere tokens fail the same way.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
from typing import Any

from repositories import b64url
from repositories.errors import InvalidArgument

_SIG_BYTES = 16


class PageTokens:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def encode(self, position: list[Any], query: str) -> str:
        payload = json.dumps([self._digest(query), position], separators=(",", ":")).encode()
        return f"{b64url.encode(payload)}.{b64url.encode(self._sign(payload))}"

    def decode(self, token: str, query: str) -> list[Any]:
        """The position in `token`; INVALID_ARGUMENT if it was not issued for `query`."""
        try:
            body, sig = token.split(".")
            payload = b64url.decode(body)
            valid = hmac.compare_digest(b64url.decode(sig), self._sign(payload))
            digest, position = json.loads(payload) if valid else (None, None)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            valid, digest, position = False, None, None
        if not valid or digest != self._digest(query) or not isinstance(position, list):
            raise InvalidArgument.field(
                "page_token",
                "is not a token this server issued for this query",
                reason="INVALID_PAGE_TOKEN",
            )
        return position

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_SIG_BYTES]

    def _digest(self, query: str) -> str:
        return hashlib.sha256(query.encode()).hexdigest()[:16]
