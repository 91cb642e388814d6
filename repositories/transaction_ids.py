"""Transaction ids that say which process owns their transaction, and cannot be forged.

An id is `tag.address.random.mac`: the owner's tag (new at each start), the address
its peers reach it at (base64url), 18 random bytes, and a MAC over those three and
the tenant that began it: HMAC-SHA256, cut to 16 bytes, under a key derived from
the secret every process of a fleet shares (REPOGATE_PAGE_TOKEN_SECRET). An id
verifies only for its own tenant and only with that key; one that does not verify
names no process, so nothing is ever dialled on its say-so.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from repositories import b64url

# Its own key, not the page tokens': HMAC of the secret over this label (page tokens
# sign JSON arrays, which never equal it), so neither can stand in for the other.
_LABEL = b"repogate/transaction-id/v1"
_MAC_BYTES = 16
_RANDOM_BYTES = 18
# The longest advertised address: an id then stays within 256 characters.
ADDRESS_MAX = 128


@dataclass(frozen=True, slots=True)
class Route:
    """Where a verified id's transaction lives: the owner's tag and address."""

    tag: str
    address: str


class TransactionIds:
    """Mints this process's ids and verifies anyone's.

    `address` is where peers reach this process; it is known once the server has
    bound its port, and set then.
    """

    def __init__(self, secret: str, *, tag: str | None = None, address: str = "") -> None:
        self._key = hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()
        self.tag = tag or secrets.token_hex(4)
        self.address = address

    def mint(self, tenant: str) -> str:
        address = self.address.encode()
        if len(address) > ADDRESS_MAX:
            raise ValueError(f"an advertised address is at most {ADDRESS_MAX} bytes")
        random = secrets.token_bytes(_RANDOM_BYTES)
        body = f"{self.tag}.{b64url.encode(address)}.{b64url.encode(random)}"
        return f"{body}.{b64url.encode(self._mac(body, tenant))}"

    def route(self, id_: str, tenant: str) -> Route | None:
        """The owner of `id_` if it verifies for `tenant`; None for anything else (an
        id of the old format, another tenant's, edited, or signed with another key)."""
        body, _, mac = id_.rpartition(".")
        parts = body.split(".")
        if len(parts) != 3 or not (parts[0] and parts[2] and mac):
            return None
        try:
            valid = hmac.compare_digest(b64url.decode(mac), self._mac(body, tenant))
            address = b64url.decode(parts[1]).decode("ascii") if valid else ""
        except (ValueError, binascii.Error):
            return None
        return Route(parts[0], address) if valid else None

    def _mac(self, body: str, tenant: str) -> bytes:
        # A tenant never holds a NUL, nor the body a NUL or anything but its alphabet.
        message = f"{body}\x00{tenant}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]
