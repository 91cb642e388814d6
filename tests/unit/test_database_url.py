"""The database URL's query parameters and REPOGATE_DB_PGBOUNCER: what the driver takes is
typed for it, and every combination that cannot work is a settings error naming the
variable (never quoting the URL, which may hold a password)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from repositories.drivers import connect_arguments
from server.settings import Settings

pytestmark = pytest.mark.unit

PG = "postgresql://app:s3cret@db.internal:5432/app"


def test_driver_parameters_reach_asyncpg_typed_and_leave_the_url() -> None:
    url, arguments = connect_arguments(
        "postgresql+asyncpg://app@db/app?statement_cache_size=0&command_timeout=2.5"
        "&ssl=require&direct_tls=false&prepared_statement_cache_size=50"
    )

    assert arguments == {
        "statement_cache_size": 0,
        "command_timeout": 2.5,
        "ssl": "require",
        "direct_tls": False,
        "prepared_statement_cache_size": 50,
    }
    assert dict(url.query) == {}


def test_several_hosts_stay_in_the_url_for_sqlalchemy() -> None:
    url, arguments = connect_arguments(
        "postgresql+asyncpg://app@/app?host=a:5432&host=b:5432&target_session_attrs=primary"
    )

    assert url.query == {"host": ("a:5432", "b:5432")}
    assert arguments == {"target_session_attrs": "primary"}


def test_the_flag_turns_the_statement_cache_off() -> None:
    _, arguments = connect_arguments("postgresql+asyncpg://app@db/app", pgbouncer=True)

    assert arguments == {"statement_cache_size": 0}
    assert (
        Settings(database_url=PG, db_pgbouncer=True, database_session_url=PG)
        .engine_options()
        .pgbouncer
    )


def test_the_flag_needs_a_session_url_for_coherent_caches() -> None:
    with pytest.raises(ValidationError, match="REPOGATE_DATABASE_SESSION_URL"):
        Settings(database_url=PG, db_pgbouncer=True)

    assert Settings(database_url=PG, db_pgbouncer=True, cache_entities=False).db_pgbouncer


def test_other_databases_keep_their_query_as_it_is() -> None:
    url, arguments = connect_arguments("sqlite+aiosqlite:///./x.db?mode=ro&uri=true")

    assert arguments == {}
    assert url.query == {"mode": "ro", "uri": "true"}


@pytest.mark.parametrize(
    ("query", "flag", "named"),
    [
        ("?statement_cache_size=none", False, "'statement_cache_size' must be a whole number"),
        ("?statement_cache_size=-1", False, "'statement_cache_size' must be a whole number"),
        ("?statement_cache_size=0&statement_cache_size=0", False, "given once"),
        ("?prepared_statement_cache_size=big", False, "'prepared_statement_cache_size'"),
        ("?command_timeout=0", False, "'command_timeout' must be seconds, above 0"),
        ("?timeout=soon", False, "'timeout' must be seconds"),
        ("?ssl=maybe", False, "'ssl' must be one of disable"),
        ("?direct_tls=perhaps", False, "'direct_tls' must be true or false"),
        ("?sslmode=require", False, "asyncpg calls it ssl"),
        ("?prepared_statement_name_func=uuid", False, "cannot carry a function"),
        ("?application=x", False, "unknown parameter 'application'"),
        # PgBouncer in transaction mode cannot keep a named statement between two calls.
        ("?statement_cache_size=100", True, "statement_cache_size must be 0"),
    ],
)
def test_query_parameters_that_cannot_work_are_refused(query: str, flag: bool, named: str) -> None:
    with pytest.raises(ValidationError, match="REPOGATE_DATABASE_URL") as err:
        Settings(database_url=PG + query, db_pgbouncer=flag)

    assert named in str(err.value)
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite:///./repogate.db", "postgresql+psycopg://app@db/app"]
)
def test_the_flag_needs_postgresql_through_asyncpg(url: str) -> None:
    with pytest.raises(ValidationError, match="REPOGATE_DB_PGBOUNCER needs a PostgreSQL"):
        Settings(database_url=url, db_pgbouncer=True)


def test_a_url_that_does_not_parse_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="REPOGATE_DATABASE_URL is not a database URL"):
        Settings(database_url="db.internal:5432")
