"""REPOGATE_DATABASE_REPLICA_URLS checked as settings are read: a settings error naming
the fix, never a traceback at the first read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from repositories.drivers import connect_arguments

if TYPE_CHECKING:
    from server.settings import Settings

NAME = "REPOGATE_DATABASE_REPLICA_URLS"


def check(s: Settings) -> None:
    """ValueError unless every replica URL is a PostgreSQL standby's the driver can use,
    with a PostgreSQL primary, and a lag bound the read-through cache cannot outlive."""
    if not s.database_url.startswith("postgresql+asyncpg://"):
        raise ValueError(
            f"{NAME} needs a PostgreSQL REPOGATE_DATABASE_URL: read replicas are PostgreSQL "
            "streaming standbys (SQLite has none)"
        )
    urls = s.replica_urls()
    if not urls:
        raise ValueError(f"{NAME} lists no URL; leave it unset for none")
    primary = make_url(s.database_url)
    seen: set[tuple[str | None, int | None, str | None]] = set()
    for position, url in enumerate(urls, 1):
        if not url.startswith("postgresql+asyncpg://"):
            raise ValueError(f"{NAME}: entry {position} must be a postgresql:// URL")
        try:
            parsed = make_url(url)
            connect_arguments(url, pgbouncer=s.db_pgbouncer)
        except (ArgumentError, ValueError) as exc:
            raise ValueError(
                f"{NAME}: entry {position}: " + str(exc).replace("REPOGATE_DATABASE_URL", NAME)
            ) from None
        where = (parsed.host, parsed.port, parsed.database)
        if where == (primary.host, primary.port, primary.database):
            raise ValueError(f"{NAME}: entry {position} is REPOGATE_DATABASE_URL itself")
        if where in seen:
            raise ValueError(f"{NAME}: entry {position} names a replica already listed")
        seen.add(where)
    if s.cache_entities and s.replica_max_lag >= s.cache_ttl:
        # A write's tombstone keeps a lagging replica's older row out of the cache only
        # while it lives (server/read_through.py): it must outlive the lag.
        raise ValueError(
            f"REPOGATE_REPLICA_MAX_LAG ({s.replica_max_lag:g}s) must be below "
            f"REPOGATE_CACHE_TTL ({s.cache_ttl}s)"
        )
