"""Counters a backend keeps for admin, metrics and benchmarks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    # Calls that failed because the backend was unreachable or too slow.
    errors: int = 0
    # Live entries dropped to make room (the memory backend's LRU).
    evictions: int = 0
    # Calls the resilient wrapper did not make while its breaker was open.
    skipped: int = 0
    # Replicated caches (cluster, Sentinel): primaries found promoted from replicas
    # since they started, which may lack writes their old primaries acknowledged.
    failovers: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits over lookups; 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def snapshot(self) -> CacheStats:
        return dataclasses.replace(self)

    def count_lookups(self, values: list[bytes | None]) -> None:
        found = sum(value is not None for value in values)
        self.hits += found
        self.misses += len(values) - found
