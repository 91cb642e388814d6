"""Each method's calls, counted once as they start and end: for AdminService.GetStats
(counts, server faults, recent latencies) and, when metrics are kept, for Prometheus
(server/grpc_metrics.py reads the same counts when scraped).

The request interceptor bumps plain integers on the event loop, the only thread that
calls or reads them (scrapes are served on the loop too).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from server.wrapping import SERVER_FAULTS


class MethodCalls:
    """One method's calls: started, and ended by code, with their time."""

    def __init__(self, window: int, buckets: Sequence[float] | None) -> None:
        self.started = 0
        # Calls ended, by the code they ended with: what `count` and `server_errors` sum.
        self.codes: dict[grpc.StatusCode, int] = {}
        self.recent: deque[float] = deque(maxlen=window)
        # Upper bounds (seconds) and how many calls took at most each and more than
        # the one before; the last count is of calls beyond every bound. None: no
        # histogram is kept.
        self.bounds = tuple(buckets) if buckets is not None else None
        self.counts = [0] * (len(self.bounds) + 1) if self.bounds is not None else []
        self.seconds = 0.0

    @property
    def count(self) -> int:
        """Calls ended."""
        return sum(self.codes.values())

    @property
    def server_errors(self) -> int:
        """Calls ended with a server fault."""
        return sum(n for code, n in self.codes.items() if code in SERVER_FAULTS)

    def ended(self, code: grpc.StatusCode, seconds: float) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1
        self.recent.append(seconds)
        if self.bounds is not None:
            # As Prometheus's `le`: a call on a bound counts in that bound's bucket.
            self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
            self.seconds += seconds


@dataclass(frozen=True)
class MethodSnapshot:
    method: str
    count: int
    server_errors: int
    p50: float  # seconds
    p95: float
    p99: float


class CallStats:
    def __init__(self, window: int = 1024, buckets: Sequence[float] | None = None) -> None:
        """`window`: percentiles cover each method's last `window` calls, recent and
        bounded. `buckets`: the upper bounds of a latency histogram to keep."""
        self._window = window
        self._buckets = buckets
        self._methods: dict[str, MethodCalls] = {}

    def of(self, method: str) -> MethodCalls:
        """The calls of `method` ('/repogate.v1.UserService/GetUser'), counted from now."""
        found = self._methods.get(method)
        if found is None:
            found = self._methods[method] = MethodCalls(self._window, self._buckets)
        return found

    def record(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """A call of `method` that started and ended."""
        calls = self.of(method)
        calls.started += 1
        calls.ended(code, seconds)

    def methods(self) -> list[tuple[str, MethodCalls]]:
        return sorted(self._methods.items())

    def snapshot(self) -> list[MethodSnapshot]:
        result = []
        for method, stats in self.methods():
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
