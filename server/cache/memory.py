"""The in-process backend: a bounded LRU with TTLs, for one server without Redis.

It answers like Redis does for everything CacheService offers (globs, integer
parsing, TTL on increment), so clients see one behaviour on both. Entries
expire lazily: an expired entry is dropped when it is next touched or seen by
a scan, or makes way for new entries through the LRU.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from server.cache.backend import INT64_MAX, INT64_MIN, ORDER_BYTES, parse_int
from server.cache.errors import NotInteger
from server.cache.glob import compile_glob
from server.cache.stats import CacheStats

Clock = Callable[[], float]


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires: float | None  # on the monotonic clock; None never


class MemoryBackend:
    name = "memory"

    def __init__(self, max_entries: int = 10_000, clock: Clock = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.stats = CacheStats()
        self._max = max_entries
        self._clock = clock
        # Least recently used first.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        """Entries held, expired ones not yet dropped included."""
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._live(key)
        self.stats.count_lookups([entry.value if entry else None])
        return entry.value if entry else None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        values = [entry.value if (entry := self._live(key)) else None for key in keys]
        self.stats.count_lookups(values)
        return values

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._put(key, value, self._deadline(ttl))

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None = None) -> None:
        deadline = self._deadline(ttl)
        for key, value in items:
            self._put(key, value, deadline)

    async def delete(self, keys: Sequence[str]) -> int:
        return sum(self._pop(key) for key in keys)

    async def set_if_newer(self, key: str, value: bytes, ttl: float) -> bool:
        entry = self._live(key)
        if entry is not None and entry.value[:ORDER_BYTES] >= value[:ORDER_BYTES]:
            return False
        self._put(key, value, self._deadline(ttl))
        return True

    async def scan(self, pattern: str, cursor: str, count: int) -> tuple[list[str], str]:
        # The cursor is the last key returned: keys come in sorted order, so an entry
        # present throughout a walk is returned exactly once, whatever the LRU does.
        glob = compile_glob(pattern)
        after = sorted(k for k in self._live_keys() if k > cursor and glob.matches(k))
        batch = after[: max(count, 1)]
        return batch, batch[-1] if len(after) > len(batch) else ""

    async def delete_matching(self, pattern: str) -> int:
        glob = compile_glob(pattern)
        return sum(self._pop(key) for key in self._live_keys() if glob.matches(key))

    async def incr(self, key: str, amount: int, ttl: float | None = None) -> int:
        entry = self._live(key)
        current = parse_int(entry.value) if entry else 0
        if current is None or not INT64_MIN <= current + amount <= INT64_MAX:
            raise NotInteger()
        result = current + amount
        self._put(key, str(result).encode(), entry.expires if entry else self._deadline(ttl))
        return result

    async def expire(self, key: str, ttl: float) -> bool:
        entry = self._live(key)
        if entry is None:
            return False
        if ttl <= 0:
            self._pop(key)
        else:
            entry.expires = self._deadline(ttl)
        return True

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()

    def _deadline(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + ttl

    def _expired(self, entry: _Entry) -> bool:
        return entry.expires is not None and entry.expires <= self._clock()

    def _live(self, key: str) -> _Entry | None:
        """The entry if present and not expired, marked as just used."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._expired(entry):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def _live_keys(self) -> list[str]:
        """Every live key; drops the expired ones met on the way."""
        expired = [key for key, entry in self._entries.items() if self._expired(entry)]
        for key in expired:
            del self._entries[key]
        return list(self._entries)

    def _pop(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        return entry is not None and not self._expired(entry)

    def _put(self, key: str, value: bytes, expires: float | None) -> None:
        self._entries[key] = _Entry(value, expires)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            _, oldest = self._entries.popitem(last=False)
            if not self._expired(oldest):
                self.stats.evictions += 1
