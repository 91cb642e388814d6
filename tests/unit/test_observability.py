"""Tracing and metrics settings, statement text in spans, and breaker states as metrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from server.metrics import BreakerCollector
from server.settings import Settings
from server.tracing import STATEMENT_MAX, normalized

pytestmark = pytest.mark.unit


def test_tracing_and_metrics_are_off_by_default() -> None:
    settings = Settings()

    assert settings.trace_exporter == "none"
    assert settings.otlp_endpoint is None
    assert settings.metrics_listen is None


def test_the_exporter_is_read_in_any_case() -> None:
    assert Settings(trace_exporter="CONSOLE").trace_exporter == "console"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"trace_exporter": "jaeger"}, "trace_exporter"),
        ({"trace_exporter": "otlp"}, "REPOGATE_OTLP_ENDPOINT"),
        ({"otlp_endpoint": "collector:4317"}, "otlp_endpoint"),
        ({"metrics_listen": "9464"}, "metrics_listen"),
        ({"metrics_listen": "127.0.0.1:http"}, "metrics_listen"),
        ({"metrics_listen": "127.0.0.1:70000"}, "metrics_listen"),
    ],
)
def test_settings_that_cannot_work_are_refused(fields: dict[str, str], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(**fields)


def test_otlp_and_metrics_settings_that_work() -> None:
    settings = Settings(
        trace_exporter="otlp",
        otlp_endpoint="https://collector.example:4317",
        metrics_listen="[::1]:9464",
    )

    assert settings.otlp_endpoint == "https://collector.example:4317"
    assert settings.metrics_listen == "[::1]:9464"


def test_empty_endpoints_mean_unset() -> None:
    settings = Settings(otlp_endpoint="", metrics_listen="")

    assert settings.otlp_endpoint is None
    assert settings.metrics_listen is None


def test_a_statement_is_put_on_one_line() -> None:
    statement = "SELECT users.id\n  FROM users\n\tWHERE users.tenant_id = ?"

    assert normalized(statement) == "SELECT users.id FROM users WHERE users.tenant_id = ?"


def test_a_long_statement_is_cut() -> None:
    statement = "INSERT INTO users (a, b) VALUES " + ", ".join(["(?, ?)"] * 5000)

    text = normalized(statement)

    assert len(text) == STATEMENT_MAX
    assert text.startswith("INSERT INTO users (a, b) VALUES (?, ?), ")
    assert text.endswith("…")


def breaker_samples(states: dict[str, str]) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    registry.register(BreakerCollector(lambda: states))
    body = generate_latest(registry).decode()
    return {
        (sample.labels["breaker"], sample.labels["state"]): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def test_each_breaker_has_a_series_per_state_and_1_on_its_own() -> None:
    samples = breaker_samples({"database": "OPEN", "cache": "HALF_OPEN"})

    assert samples == {
        ("cache", "CLOSED"): 0,
        ("cache", "OPEN"): 0,
        ("cache", "HALF_OPEN"): 1,
        ("database", "CLOSED"): 0,
        ("database", "OPEN"): 1,
        ("database", "HALF_OPEN"): 0,
    }


def test_a_state_of_another_name_gets_its_own_series() -> None:
    samples = breaker_samples({"database": "FORCED_OPEN"})

    assert samples[("database", "FORCED_OPEN")] == 1
    assert samples[("database", "CLOSED")] == 0


def test_no_breakers_no_series() -> None:
    assert breaker_samples({}) == {}
