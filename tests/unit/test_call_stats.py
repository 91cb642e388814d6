"""Per-method call statistics and statement normalisation: pure logic."""

from __future__ import annotations

import grpc
import pytest

from repositories.profiler import normalize
from server.call_stats import CallStats

pytestmark = pytest.mark.unit


def test_percentiles_are_nearest_rank_over_the_recent_window() -> None:
    stats = CallStats(window=100)
    for ms in range(1, 201):  # only the last 100 (101..200 ms) stay in the window
        stats.record("/s/M", grpc.StatusCode.OK, ms / 1000)

    (m,) = stats.snapshot()

    assert (m.method, m.count) == ("s/M", 200)
    assert (m.p50, m.p95, m.p99) == (0.150, 0.195, 0.199)


def test_only_server_faults_count_as_errors() -> None:
    stats = CallStats()
    for code in (
        grpc.StatusCode.OK,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ):
        stats.record("/s/M", code, 0.001)

    assert stats.snapshot()[0].server_errors == 3


@pytest.mark.parametrize(
    ("sql", "normal"),
    [
        ("SELECT a\n   FROM t\tWHERE x = $1", "SELECT a FROM t WHERE x = $1"),
        ("SELECT * FROM t WHERE id IN ($1, $2, $3, $4)", "SELECT * FROM t WHERE id IN (…)"),
        ("SELECT * FROM t WHERE id IN (?, ?, ?)", "SELECT * FROM t WHERE id IN (…)"),
        ("INSERT INTO t (a, b) VALUES ($1, $2)", "INSERT INTO t (a, b) VALUES ($1, $2)"),
        (
            "INSERT INTO t (a, b, c) VALUES ($1::UUID, $2::TIMESTAMP WITH TIME ZONE, $3), "
            "($4::UUID, $5::TIMESTAMP WITH TIME ZONE, $6), ($7::UUID, $8::TIMESTAMP WITH "
            "TIME ZONE, $9)",
            "INSERT INTO t (a, b, c) VALUES (…), …",
        ),
    ],
)
def test_statements_are_normalized(sql: str, normal: str) -> None:
    assert normalize(sql) == normal


def test_a_long_statement_is_cut_to_a_bounded_length() -> None:
    sql = "SELECT " + ", ".join(f"column_{i}" for i in range(1000)) + " FROM t"

    assert len(normalize(sql)) == 2048
    assert normalize(sql).endswith("…")


def test_the_histogram_counts_a_call_on_a_bound_in_that_bounds_bucket() -> None:
    stats = CallStats(buckets=(0.001, 0.01))
    calls = stats.of("/s/M")
    for seconds in (0.0005, 0.001, 0.002, 0.01, 5.0):
        calls.started += 1
        calls.ended(grpc.StatusCode.OK, seconds)
    calls.started += 1  # one still running

    assert (calls.counts, calls.seconds) == ([2, 2, 1], pytest.approx(5.0135))
    assert (calls.started, calls.count, calls.codes) == (6, 5, {grpc.StatusCode.OK: 5})


def test_without_buckets_no_histogram_is_kept() -> None:
    stats = CallStats()
    stats.record("/s/M", grpc.StatusCode.NOT_FOUND, 0.5)

    ((method, calls),) = stats.methods()
    assert (method, calls.bounds, calls.counts, calls.codes) == (
        "/s/M",
        None,
        [],
        {grpc.StatusCode.NOT_FOUND: 1},
    )
