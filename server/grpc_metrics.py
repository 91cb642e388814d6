"""The gRPC server metrics under the names and labels every gRPC dashboard expects:
go-grpc-prometheus's (grpc-ecosystem/go-grpc-middleware's providers/prometheus).

    grpc_server_started_total{grpc_type,grpc_service,grpc_method}
    grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}
    grpc_server_msg_received_total{grpc_type,grpc_service,grpc_method}
    grpc_server_msg_sent_total{grpc_type,grpc_service,grpc_method}
    grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}  (histogram)

with `grpc_code` spelled as grpc-go's codes.Code.String() spells it (`OK`, `NotFound`,
`Canceled`), which is what go-grpc-prometheus writes and dashboards match;

and, Repogate's own as no convention names one, `repogate_grpc_server_in_flight` with the
same labels as started. Every method watched is unary (streaming methods are not
wrapped, see server/wrapping.py), so a call receives exactly one message before it
starts, and sends one exactly when it ends OK: the two message counters, and the
in-flight gauge (started less handled), are read from the started and handled counters
when scraped instead of being counted again on every call. A call pays for two
increments and one observation, as it did under the names before (about 1.5 µs).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import grpc
from grpc import aio
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from server.wrapping import Behaviour, BehaviourInterceptor, final_code, split_method

# Seconds; finer than Prometheus's default at the low end, where cached Gets land.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LABELS = ("grpc_type", "grpc_service", "grpc_method")
UNARY = "unary"
# grpc-go's names of the codes: NOT_FOUND -> NotFound, and its American Canceled.
GO_CODE_NAMES = {
    code: "OK"
    if code is grpc.StatusCode.OK
    else "Canceled"
    if code is grpc.StatusCode.CANCELLED
    else code.name.title().replace("_", "")
    for code in grpc.StatusCode
}
IN_FLIGHT = "repogate_grpc_server_in_flight"


class RpcMetrics(BehaviourInterceptor):
    """Counts each call as it starts and as it ends, with the code it ended with, and
    times it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        # Help texts as go-grpc-prometheus words them.
        self._started = Counter(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            LABELS,
            registry=registry,
        )
        self._handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*LABELS, "grpc_code"),
            registry=registry,
        )
        self._seconds = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been "
            "application-level handled by the server.",
            LABELS,
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        registry.register(_Derived(self._started, self._handled))
        # Label lookups cost more than the increments: one per method and code.
        self._series: dict[tuple[str, grpc.StatusCode], Any] = {}

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        service, name = split_method(method)
        labels = (UNARY, service, name)
        started = self._started.labels(*labels)
        seconds = self._seconds.labels(*labels)
        handled = self._handled_series

        async def run(request: Any, ctx: aio.ServicerContext) -> Any:
            started.inc()
            start = time.perf_counter()
            error: BaseException | None = None
            try:
                return await behaviour(request, ctx)
            except BaseException as exc:
                error = exc
                raise
            finally:
                seconds.observe(time.perf_counter() - start)
                handled(method, final_code(ctx, error)).inc()

        return run

    def _handled_series(self, method: str, code: grpc.StatusCode) -> Any:
        series = self._series.get((method, code))
        if series is None:
            service, name = split_method(method)
            series = self._series[(method, code)] = self._handled.labels(
                UNARY, service, name, GO_CODE_NAMES[code]
            )
        return series


class _Derived:
    """grpc_server_msg_received_total, grpc_server_msg_sent_total and the in-flight
    gauge, from the started and handled counters (unary calls only)."""

    def __init__(self, started: Counter, handled: Counter) -> None:
        self._started = started
        self._handled = handled

    def collect(self) -> Iterator[Metric]:
        started = _totals(self._started, LABELS)
        handled: dict[tuple[str, ...], float] = defaultdict(float)
        sent: dict[tuple[str, ...], float] = defaultdict(float)
        for labels, value in _totals(self._handled, (*LABELS, "grpc_code")).items():
            key, code = labels[:-1], labels[-1]
            handled[key] += value
            if code == GO_CODE_NAMES[grpc.StatusCode.OK]:
                sent[key] += value
        received = CounterMetricFamily(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            labels=LABELS,
        )
        sent_family = CounterMetricFamily(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            labels=LABELS,
        )
        in_flight = GaugeMetricFamily(
            IN_FLIGHT,
            "RPCs started on the server and not yet handled (started less handled).",
            labels=LABELS,
        )
        for key, count in sorted(started.items()):
            values = list(key)
            received.add_metric(values, count)
            sent_family.add_metric(values, sent.get(key, 0.0))
            in_flight.add_metric(values, count - handled.get(key, 0.0))
        yield from (received, sent_family, in_flight)


def _totals(counter: Counter, names: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """A labelled counter's value by the values of its labels `names`."""
    return {
        tuple(sample.labels[name] for name in names): sample.value
        for family in counter.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }
