"""What every cache backend offers: bytes under full keys, nothing tenant-aware.

Keys here are complete (server/cache/keys.py builds them); patterns are Redis
globs (server/cache/glob.py). A backend raises CacheUnavailable when it cannot
answer and NotInteger from incr; nothing else is expected of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from server.cache.stats import CacheStats

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# set_if_newer orders values by their first bytes: read-through puts a 20-digit
# zero-padded version there, then a kind byte that ranks a tombstone below a value.
ORDER_BYTES = 21
_INTEGER = re.compile(rb"0|-?[1-9][0-9]*")


class CacheBackend(Protocol):
    # "memory", "redis" or "redis-cluster": page tokens are bound to it, since
    # cursors differ.
    name: str
    stats: CacheStats

    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values in the order of `keys`, None where absent."""
        ...

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Writes `key`; `ttl` in seconds (above 0), None for no expiry."""
        ...

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None = None) -> None:
        """Writes every item at once, all with the same TTL."""
        ...

    async def delete(self, keys: Sequence[str]) -> int:
        """Deletes `keys`; returns how many existed."""
        ...

    async def set_if_newer(self, key: str, value: bytes, ttl: float) -> bool:
        """Writes `value` unless `key` holds a value whose first ORDER_BYTES bytes are
        not below `value`'s (compared as bytes); atomic. Says whether it wrote."""
        ...

    async def scan(self, pattern: str, cursor: str, count: int) -> tuple[list[str], str]:
        """Some keys matching `pattern` from `cursor` ("" to start), and the next cursor
        ("" when done). Roughly `count` keys (a Redis hint); keys present throughout a
        walk are returned at least once."""
        ...

    async def delete_matching(self, pattern: str) -> int:
        """Deletes every key matching `pattern`, by scanning; returns how many."""
        ...

    async def incr(self, key: str, amount: int, ttl: float | None = None) -> int:
        """Adds `amount` atomically to a decimal int64 value (absent: 0) and returns the
        result. A key this creates expires after `ttl`; an existing key keeps its TTL."""
        ...

    async def expire(self, key: str, ttl: float) -> bool:
        """Sets the TTL of `key` (0 deletes it); returns whether it existed."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def parse_int(value: bytes) -> int | None:
    """The int64 in `value` as Redis reads it (string2ll): `0`, or an optional `-` and
    digits without a leading zero; no `+`, no spaces. None for anything else."""
    if len(value) > 20 or not _INTEGER.fullmatch(value):
        return None
    number = int(value)
    return number if INT64_MIN <= number <= INT64_MAX else None
