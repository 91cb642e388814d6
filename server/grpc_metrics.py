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
same labels as started.

Nothing here runs per call: the request interceptor counts each call as it starts and
ends, in plain integers (server/call_stats.py), for AdminService.GetStats already, and
these metrics are read from those counts when scraped. Counting them again through
prometheus_client's Counter and Histogram, in an interceptor of their own, cost 20 µs
of server CPU per GetUser with tracing and the access log on (python -m bench.ab, all
three on against all three but metrics, 2-core machine). Every method watched is unary
(streaming methods are not wrapped, see server/wrapping.py), so a call receives exactly
one message before it starts, and sends one exactly when it ends OK.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import grpc
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from server.call_stats import CallStats
from server.wrapping import split_method

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


def _le(bound: float) -> str:
    """A bucket's `le` label, as prometheus_client's Histogram writes it."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


class RpcCollector:
    """The gRPC server metrics of the calls `calls` counted."""

    def __init__(self, calls: CallStats) -> None:
        self._calls = calls

    def collect(self) -> Iterator[Metric]:
        # Help texts as go-grpc-prometheus words them.
        started = CounterMetricFamily(
            "grpc_server_started", "Total number of RPCs started on the server.", labels=LABELS
        )
        handled = CounterMetricFamily(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            labels=(*LABELS, "grpc_code"),
        )
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been "
            "application-level handled by the server.",
            labels=LABELS,
        )
        received = CounterMetricFamily(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            labels=LABELS,
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            labels=LABELS,
        )
        in_flight = GaugeMetricFamily(
            IN_FLIGHT,
            "RPCs started on the server and not yet handled (started less handled).",
            labels=LABELS,
        )
        for method, calls in self._calls.methods():
            service, name = split_method(method)
            labels = [UNARY, service, name]
            started.add_metric(labels, calls.started)
            received.add_metric(labels, calls.started)
            for code, count in sorted(calls.codes.items(), key=lambda item: item[0].value[0]):
                handled.add_metric([*labels, GO_CODE_NAMES[code]], count)
            sent.add_metric(labels, calls.codes.get(grpc.StatusCode.OK, 0))
            in_flight.add_metric(labels, calls.started - calls.count)
            if calls.bounds is not None:
                bounds = [*map(_le, calls.bounds), "+Inf"]
                cumulative = zip(bounds, itertools.accumulate(calls.counts), strict=True)
                seconds.add_metric(labels, list(cumulative), calls.seconds)
        yield from (started, handled, seconds, received, sent, in_flight)
