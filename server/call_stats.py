"""Per-method call counts, server faults and recent latencies, for AdminService."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import grpc

from server.wrapping import SERVER_FAULTS


@dataclass
class _Method:
    count: int = 0
    server_errors: int = 0
    recent: deque[float] = field(default_factory=deque)


@dataclass(frozen=True)
class MethodSnapshot:
    method: str
    count: int
    server_errors: int
    p50: float  # seconds
    p95: float
    p99: float


class CallStats:
    def __init__(self, window: int = 1024) -> None:
        # Percentiles cover each method's last `window` calls: recent, and bounded.
        self._window = window
        self._methods: dict[str, _Method] = {}

    def record(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        stats = self._methods.get(method)
        if stats is None:
            stats = self._methods[method] = _Method(recent=deque(maxlen=self._window))
        stats.count += 1
        stats.server_errors += code in SERVER_FAULTS
        stats.recent.append(seconds)

    def snapshot(self) -> list[MethodSnapshot]:
        result = []
        for method, stats in sorted(self._methods.items()):
            ordered = sorted(stats.recent)
            result.append(
                MethodSnapshot(
                    method.lstrip("/"),
                    stats.count,
                    stats.server_errors,
                    *(_percentile(ordered, p) for p in (50, 95, 99)),
                )
            )
        return result


def _percentile(ordered: list[float], p: int) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
