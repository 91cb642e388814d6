"""One tenant's client keys: the only way CacheService reaches a backend.

Keys go in and come out without the tenant prefix; the prefix is added here
and nowhere else, and a listed key without it is dropped rather than shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from repositories.errors import InvalidArgument
from server.cache import keys
from server.cache.backend import CacheBackend
from server.page_tokens import PageTokens

# SCAN round trips one ListKeys page may take; a sparse pattern gets short pages instead.
MAX_SCANS_PER_PAGE = 16


@dataclass(frozen=True)
class Position:
    """Where a key listing stands: the backend's scan cursor ("" before the first scan,
    None after the last) and keys of the last batch that did not fit on the page."""

    cursor: str | None
    pending: tuple[str, ...] = ()


START = Position("")


class TenantCache:
    def __init__(self, backend: CacheBackend, tenant: str) -> None:
        self._backend = backend
        self._tenant = tenant
        self._prefix = keys.client_prefix(tenant)

    async def get(self, key: str) -> bytes | None:
        return await self._backend.get(self._prefix + key)

    async def get_many(self, names: Sequence[str]) -> list[tuple[str, bytes]]:
        """The keys found with their values, in the order asked."""
        values = await self._backend.get_many(self._full(names))
        return [(k, v) for k, v in zip(names, values, strict=True) if v is not None]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._backend.set(self._prefix + key, value, ttl)

    async def set_many(self, entries: Sequence[tuple[str, bytes]], ttl: float) -> None:
        await self._backend.set_many([(self._prefix + k, v) for k, v in entries], ttl)

    async def delete(self, names: Sequence[str]) -> int:
        return await self._backend.delete(self._full(names))

    async def invalidate(self, pattern: str) -> int:
        return await self._backend.delete_matching(keys.client_pattern(self._tenant, pattern))

    async def increment(self, key: str, amount: int, ttl: float) -> int:
        return await self._backend.incr(self._prefix + key, amount, ttl)

    async def expire(self, key: str, ttl: float) -> bool:
        return await self._backend.expire(self._prefix + key, ttl)

    async def page(
        self, pattern: str, position: Position, size: int
    ) -> tuple[list[str], Position | None]:
        """Up to `size` keys matching `pattern` from `position`, and the position after
        them (None at the end). A scan batch may bring more keys than the page has room
        for (SCAN's COUNT is a hint): the surplus waits in the position for the next page."""
        found = list(position.pending[:size])
        pending, cursor = position.pending[size:], position.cursor
        glob = keys.client_pattern(self._tenant, pattern)
        for _ in range(MAX_SCANS_PER_PAGE):
            room = size - len(found)
            if pending or cursor is None or room <= 0:
                break
            batch, after = await self._backend.scan(glob, cursor, room)
            mine = self._strip(batch)
            found += mine[:room]
            pending, cursor = tuple(mine[room:]), after or None
        if not pending and cursor is None:
            return found, None
        return found, Position(cursor, pending)

    def listing_query(self, pattern: str) -> str:
        """What a page token is bound to: backend (cursors differ), tenant and pattern."""
        return f"cache|{self._backend.name}|{self._tenant}|{pattern}"

    def _full(self, names: Sequence[str]) -> list[str]:
        return [self._prefix + name for name in names]

    def _strip(self, full: list[str]) -> list[str]:
        n = len(self._prefix)
        return [key[n:] for key in full if key.startswith(self._prefix)]


def encode_position(tokens: PageTokens, position: Position, query: str) -> str:
    return tokens.encode([position.cursor, list(position.pending)], query)


def decode_position(tokens: PageTokens, token: str, query: str) -> Position:
    if not token:
        return START
    match tokens.decode(token, query):
        case [(str() | None) as cursor, list() as pending] if all(
            isinstance(key, str) for key in pending
        ):
            return Position(cursor, tuple(pending))
    raise InvalidArgument.field(
        "page_token", "is not a token this server issued", reason="INVALID_PAGE_TOKEN"
    )
