"""REPOGATE_DATABASE_REPLICA_URLS and REPOGATE_REPLICA_MAX_LAG: refused with a settings
error naming the variable for SQLite, URLs that are no standby's, and lag bounds that
make no sense."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from server.settings import Settings

pytestmark = pytest.mark.unit

PG = "postgresql://app@primary:5432/app"


def settings(**fields: Any) -> Settings:
    return Settings(**{"database_url": PG, **fields})


def test_replica_urls_are_read_with_their_async_driver() -> None:
    s = settings(database_replica_urls=" postgresql://app@r1/app, postgres://app@r2:6432/app ,")

    assert s.replica_urls() == (
        "postgresql+asyncpg://app@r1/app",
        "postgresql+asyncpg://app@r2:6432/app",
    )
    assert s.replica_max_lag == 5.0


def test_no_replicas_by_default() -> None:
    assert settings().replica_urls() == ()


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        (
            {"database_url": "sqlite:///x.db", "database_replica_urls": "postgresql://r/app"},
            "needs a PostgreSQL REPOGATE_DATABASE_URL",
        ),
        ({"database_replica_urls": "mysql://r/app"}, "entry 1 must be a postgresql:// URL"),
        ({"database_replica_urls": ","}, "lists no URL"),
        (
            {"database_replica_urls": "postgresql://a@r/app,postgresql://b@r/app"},
            "entry 2 names a replica already listed",
        ),
        ({"database_replica_urls": PG}, "is REPOGATE_DATABASE_URL itself"),
        (
            {"database_replica_urls": "postgresql://r/app?statement_cache_size=lots"},
            "REPOGATE_DATABASE_REPLICA_URLS: entry 1",
        ),
        (
            {"database_replica_urls": "postgresql://r/app", "replica_max_lag": 300},
            "must be below REPOGATE_CACHE_TTL",
        ),
    ],
)
def test_unusable_replica_settings_are_refused(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        settings(**fields)


@pytest.mark.parametrize("lag", [0, -1, "soon", 3601])
def test_a_nonsense_lag_bound_is_refused(lag: object) -> None:
    with pytest.raises(ValidationError, match="replica_max_lag"):
        settings(database_replica_urls="postgresql://r/app", replica_max_lag=lag)


def test_the_lag_bound_may_pass_the_ttl_when_entities_are_not_cached() -> None:
    s = settings(
        database_replica_urls="postgresql://r/app", replica_max_lag=600, cache_entities=False
    )

    assert s.replica_max_lag == 600
