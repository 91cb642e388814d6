"""What a PostgreSQL URL's query may say to the driver, checked before anything connects.

SQLAlchemy hands the query parameters of a `postgresql+asyncpg://` URL to
`asyncpg.connect()` as strings: `statement_cache_size=0` then fails inside the
first connect with a TypeError, and an unknown name such as `sslmode` with
another. Here each parameter asyncpg (or SQLAlchemy's dialect) accepts is
parsed into its type and passed as a connect argument; anything else is refused
with a message naming the parameter, never quoting its value.

Behind PgBouncer in transaction pooling mode (`pgbouncer=True`) a client's
consecutive message groups may reach different server connections, so nothing
may outlive one group. asyncpg's statement cache is turned off
(`statement_cache_size=0`): every statement is then unnamed, and asyncpg sends
its Parse again in the same group as its Bind, Execute and Sync (asyncpg 0.29
and later, for exactly this case), so a statement never depends on one an
earlier group prepared. SQLAlchemy's own cache of prepared statements may stay:
what it keeps is then such an unnamed statement, which is parsed anew on every
execution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

ASYNCPG = "postgresql+asyncpg"
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SESSION_ATTRS = ("any", "primary", "standby", "read-write", "read-only", "prefer-standby")


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError
    return number


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ValueError
    return lowered in ("true", "1", "yes", "on")


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError
        return value

    parse.__doc__ = "one of " + ", ".join(choices)
    return parse


def _text(value: str) -> str:
    return value


# Each parameter with how it is read, and what a reader of the error should be told.
PARAMETERS: dict[str, tuple[Callable[[str], Any], str]] = {
    # SQLAlchemy's cache of prepared statements, per connection.
    "prepared_statement_cache_size": (_count, "a whole number, 0 or more"),
    # asyncpg.connect()
    "statement_cache_size": (_count, "a whole number, 0 or more"),
    "max_cached_statement_lifetime": (_count, "a whole number of seconds, 0 or more"),
    "max_cacheable_statement_size": (_count, "a whole number of bytes, 0 or more"),
    "timeout": (_seconds, "seconds, above 0"),
    "command_timeout": (_seconds, "seconds, above 0"),
    "ssl": (_one_of(*_SSL_MODES), "one of " + ", ".join(_SSL_MODES)),
    "direct_tls": (_flag, "true or false"),
    "target_session_attrs": (_one_of(*_SESSION_ATTRS), "one of " + ", ".join(_SESSION_ATTRS)),
    "passfile": (_text, "a path"),
    "service": (_text, "a service name"),
    "servicefile": (_text, "a path"),
    "krbsrvname": (_text, "a Kerberos service name"),
    "gsslib": (_one_of("gssapi", "sspi"), "gssapi or sspi"),
}
# Read by SQLAlchemy from the URL itself (several hosts: ?host=a:5432&host=b:5432).
_LEFT_IN_URL = frozenset({"host", "port"})
_HINTS = {
    "sslmode": "asyncpg calls it ssl (ssl=require)",
    "prepared_statement_name_func": "a URL cannot carry a function",
}


def connect_arguments(url: str, *, pgbouncer: bool = False) -> tuple[URL, dict[str, Any]]:
    """`url` without the driver's parameters, and those parameters typed for the driver.

    Raises ValueError, naming the parameter at fault, for a parameter the driver does
    not take, a value it cannot use, or one that cannot work behind PgBouncer.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("REPOGATE_DATABASE_URL is not a database URL") from None
    if parsed.drivername != ASYNCPG:
        if pgbouncer:
            raise ValueError(
                "REPOGATE_DB_PGBOUNCER needs a PostgreSQL REPOGATE_DATABASE_URL "
                "(postgresql:// or postgresql+asyncpg://)"
            )
        return parsed, {}
    arguments: dict[str, Any] = {}
    for name, value in parsed.query.items():
        if name in _LEFT_IN_URL:
            continue
        if name not in PARAMETERS:
            hint = _HINTS.get(name, "it takes " + ", ".join(sorted(PARAMETERS)))
            raise ValueError(f"REPOGATE_DATABASE_URL: unknown parameter {name!r}: {hint}")
        parse, expected = PARAMETERS[name]
        try:
            if not isinstance(value, str):
                raise ValueError
            arguments[name] = parse(value)
        except ValueError:
            raise ValueError(
                f"REPOGATE_DATABASE_URL: parameter {name!r} must be {expected}, given once"
            ) from None
    if pgbouncer:
        if arguments.get("statement_cache_size", 0) != 0:
            raise ValueError(
                "REPOGATE_DATABASE_URL: statement_cache_size must be 0 (or left out) with "
                "REPOGATE_DB_PGBOUNCER=true: PgBouncer in transaction mode hands a cached "
                "statement's later use to a server connection that never prepared it"
            )
        arguments["statement_cache_size"] = 0
    return parsed.difference_update_query(arguments), arguments
