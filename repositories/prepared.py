"""Statements compiled once and run on the driver: the lean path.

SQLAlchemy Core builds every statement and compiles it (its compiled form, bind and
result processors are what run here, so values go to the database and come back as
they do through SQLAlchemy). What is skipped is SQLAlchemy's execution of a compiled
statement: its execution context, cursor adapter, greenlet hops and result object,
about 140 µs of CPU per statement over asyncpg's own cost on the 2-core bench
machines.

On PostgreSQL a statement runs as SQLAlchemy's asyncpg dialect runs it: under the
connection's mutex, in the transaction the dialect would begin (none in autocommit),
through the dialect's cache of asyncpg prepared statements (so PgBouncer's rules and
schema invalidation stay its). On SQLite it runs on aiosqlite in one hop to its
thread, in the transaction SQLAlchemy begins (the engine's BEGIN hook). Either way
`before_cursor_execute`, `after_cursor_execute` and `handle_error` are dispatched to
their listeners (statement spans, the slow statement log), and a driver error is
raised as the same SQLAlchemy exception (`repositories/errors.py` translates it). A
statement this cannot run as SQLAlchemy would (expanding IN lists, Python-side
defaults other than constants, executemany) is left to SQLAlchemy: `fetch` answers
None.

Rows come back as dicts keyed as SQLAlchemy's row mappings are.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from types import MappingProxyType
from typing import Any, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.engine.base import ExceptionContextImpl
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.cache_key import CacheKey
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

log = logging.getLogger(__name__)
Processor = Callable[[Any], Any]
# Compiled statements kept per dialect: the few hot shapes and the statements filters
# build (their literal values are parameters, so a filter's shape compiles once).
KEEP = 500


class _Shape:
    """One statement compiled for one dialect and set of parameter names."""

    __slots__ = (
        "binds",
        "compiled",
        "defaults",
        "keys",
        "own",
        "positions",
        "results",
        "sql",
        "values",
    )

    def __init__(
        self, compiled: SQLCompiler, defaults: dict[str, Any], cache_key: CacheKey
    ) -> None:
        self.compiled = compiled
        # The parameters of the statement object it was compiled from, and their values:
        # a statement built once (repositories/scope.py) comes back as that object, whose
        # memoized cache key hands back these same parameters, so its values are known.
        self.own = cache_key.bindparams
        self.values = compiled.construct_params(
            extracted_parameters=self.own, escape_names=False, _check=False
        )
        self.sql = compiled.string
        self.positions: tuple[str, ...] = tuple(compiled.positiontup or ())
        self.binds: Mapping[str, Processor] = compiled._bind_processors  # type: ignore[assignment]
        # Columns with a constant default, filled when the parameters lack them.
        self.defaults = defaults
        self.keys: tuple[str, ...] = tuple(entry[0] for entry in compiled._result_columns)
        # Set at the first execution, from the types the database describes.
        self.results: list[tuple[str, Processor]] | None = None

    def arguments(self, params: Mapping[str, Any] | None, extracted: Sequence[Any]) -> list[Any]:
        values: MutableMapping[str, Any]
        if extracted is self.own:
            values = {**self.values, **params} if params else dict(self.values)
        else:
            values = self.compiled.construct_params(
                params, extracted_parameters=extracted, escape_names=False
            )
        for key, default in self.defaults.items():
            if values.get(key) is None and (params is None or key not in params):
                values[key] = default
        binds = self.binds
        return [binds[key](values[key]) if key in binds else values[key] for key in self.positions]

    def processors(
        self, dialect: Dialect, attributes: Sequence[Any] | None
    ) -> list[tuple[str, Processor]]:
        """The columns whose values SQLAlchemy processes, and how: from the types the
        database describes at the first execution (asyncpg), or none (SQLite)."""
        if self.results is None:
            entries = self.compiled._result_columns
            oids = [None] * len(entries) if attributes is None else [a.type.oid for a in attributes]
            self.results = [
                (entry[0], process)
                for entry, oid in zip(entries, oids, strict=True)
                if (process := entry[3]._cached_result_processor(dialect, oid))
            ]
        return self.results


class _Unsupported:
    """A statement the lean path leaves to SQLAlchemy."""


_UNSUPPORTED = _Unsupported()


class Statements:
    """The compiled shapes of one dialect (all dropped, to start again, past KEEP)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.sqlite = dialect.driver == "aiosqlite"
        self._shapes: dict[Any, _Shape | _Unsupported] = {}

    def shape(
        self, stmt: ClauseElement, keys: tuple[str, ...]
    ) -> tuple[_Shape, Sequence[Any]] | None:
        cache_key = stmt._generate_cache_key()
        if cache_key is None:
            return None
        key = (cache_key.key, keys)
        shape = self._shapes.get(key)
        if shape is None:
            if len(self._shapes) >= KEEP:
                self._shapes.clear()
            shape = self._shapes[key] = self._compile(stmt, keys, cache_key)
        if isinstance(shape, _Unsupported):
            return None
        return shape, cache_key.bindparams

    def _compile(
        self, stmt: ClauseElement, keys: tuple[str, ...], cache_key: CacheKey
    ) -> _Shape | _Unsupported:
        # With its cache key, as SQLAlchemy compiles for its cache: later statements of
        # the same shape then supply their own values (`extracted`) to construct_params.
        compiled = stmt.compile(dialect=self.dialect, column_keys=list(keys), cache_key=cache_key)
        assert isinstance(compiled, SQLCompiler)
        if (
            not compiled.positional
            or compiled.literal_execute_params
            or compiled.post_compile_params
            or compiled.update_prefetch
        ):
            return _UNSUPPORTED
        defaults: dict[str, Any] = {}
        for column in compiled.insert_prefetch:
            default = column.default
            if default is None or not default.is_scalar:
                return _UNSUPPORTED
            defaults[column.key] = default.arg  # type: ignore[attr-defined]
        return _Shape(compiled, defaults, cache_key)


_by_dialect: weakref.WeakKeyDictionary[Dialect, Statements] = weakref.WeakKeyDictionary()


def statements(dialect: Dialect) -> Statements | None:
    """The lean path's statements for `dialect`; None where it does not run (a driver
    other than asyncpg and aiosqlite)."""
    found = _by_dialect.get(dialect)
    if found is None and dialect.driver in ("asyncpg", "aiosqlite"):
        found = _by_dialect[dialect] = Statements(dialect)
    return found


def connections(conn: AsyncConnection) -> tuple[Connection, Any]:
    """SQLAlchemy's connection under `conn`, and the driver's connection (as SQLAlchemy's
    adapter wraps it) under that."""
    sync = conn.sync_connection
    assert sync is not None
    return sync, sync.connection.dbapi_connection


class LeanContext:
    """What statement listeners are handed as the execution context: they keep their
    own state on it (a statement's span)."""

    invoked_statement: Executable | None = None
    # Lean statements are the repository's own, run with no execution options.
    execution_options: Mapping[str, Any] = MappingProxyType({})


async def fetch(
    lean: Statements, conn: AsyncConnection, stmt: Executable, params: Mapping[str, Any] | None
) -> list[Mapping[str, Any]] | None:
    """The rows `stmt` returns, run on the driver; None when the lean path leaves it
    to SQLAlchemy (nothing has run then)."""
    if not isinstance(stmt, ClauseElement):
        return None
    found = lean.shape(stmt, tuple(sorted(params)) if params else ())
    if found is None:
        return None
    shape, extracted = found
    args = shape.arguments(params, extracted)
    sync, adapted = connections(conn)
    if lean.sqlite:
        if not sync.in_transaction():
            # SQLAlchemy's autobegin, which runs the engine's begin hook: BEGIN, or
            # BEGIN IMMEDIATE for a unit that writes (repositories/database.py).
            await conn.begin()
    elif not adapted.autocommit and not sync.in_transaction():
        # SQLAlchemy's autobegin (no round trip on asyncpg), so that its commit and
        # rollback reach the transaction the driver begins below.
        sync.begin()
    dialect: Any = lean.dialect
    events = sync._has_events or sync.engine._has_events
    context = LeanContext()
    if events:
        sync.dispatch.before_cursor_execute(sync, None, shape.sql, args, context, False)
    try:
        async with adapted._execute_mutex:
            if lean.sqlite:
                # One hop to aiosqlite's thread, where SQLAlchemy's cursor takes four
                # (cursor, execute, fetchall, close).
                records = await adapted._connection.execute_fetchall(shape.sql, args)
                attributes = None
            else:
                if adapted._transaction is None:
                    await adapted._start_transaction()
                prepared, attributes = await adapted._prepare(
                    shape.sql, dialect._invalidate_schema_cache_asof
                )
                records = await prepared.fetch(*args)
    except Exception as error:
        raise await _failed(lean, conn, context, error, shape.sql, args) from error
    except BaseException:
        await _cut_off(conn)
        raise
    if events:
        sync.dispatch.after_cursor_execute(sync, None, shape.sql, args, context, False)
    keys = shape.keys
    rows = [dict(zip(keys, record, strict=True)) for record in records]
    for key, process in shape.processors(dialect, attributes):
        for row in rows:
            row[key] = process(row[key])
    return cast(list[Mapping[str, Any]], rows)


async def execute(conn: AsyncConnection, stmt: Executable, params: Mapping[str, Any]) -> None:
    """Runs `stmt`, a statement outside any tenant's scope that returns nothing, on the
    lean path where it runs, else through SQLAlchemy."""
    lean = statements(conn.dialect)
    if lean is None or await fetch(lean, conn, stmt, params) is None:
        await conn.execute(stmt, dict(params))


async def script(lean: Statements, conn: AsyncConnection, sql: str) -> None:
    """Runs `sql`, statements without parameters separated by semicolons, in one round
    trip on PostgreSQL (asyncpg's simple query protocol), in the connection's
    transaction, with the statement listeners told as for `fetch`."""
    sync, adapted = connections(conn)
    if not sync.in_transaction():
        await conn.begin()
    events = sync._has_events or sync.engine._has_events
    context = LeanContext()
    if events:
        sync.dispatch.before_cursor_execute(sync, None, sql, (), context, False)
    try:
        async with adapted._execute_mutex:
            if lean.sqlite:
                for each in sql.split(";"):
                    await adapted._connection.execute(each)
            else:
                if adapted._transaction is None:
                    await adapted._start_transaction()
                await adapted._connection.execute(sql)
    except Exception as error:
        raise await _failed(lean, conn, context, error, sql, []) from error
    except BaseException:
        await _cut_off(conn)
        raise
    if events:
        sync.dispatch.after_cursor_execute(sync, None, sql, (), context, False)


async def _cut_off(conn: AsyncConnection) -> None:
    """A statement cancelled midway: as SQLAlchemy does, the connection is invalidated (the
    pool discards it), its state on the server being unknown. A failure to do so is
    logged, never raised over the cancellation."""
    try:
        await conn.invalidate()
    except Exception:
        log.warning("invalidating a connection cut off mid-statement failed", exc_info=True)


async def failed(
    lean: Statements, conn: AsyncConnection, error: Exception, sql: str
) -> BaseException:
    """`error`, raised by the driver running `sql` (no parameters) outside `fetch` and
    `script`, as SQLAlchemy would raise it; see _failed."""
    return await _failed(lean, conn, LeanContext(), error, sql, [])


async def _failed(
    lean: Statements,
    conn: AsyncConnection,
    context: LeanContext,
    error: Exception,
    statement: str,
    args: list[Any],
) -> BaseException:
    """`error` from the driver as SQLAlchemy raises it, after `handle_error` listeners
    heard of it; a lost connection is invalidated, as SQLAlchemy does."""
    sync, adapted = connections(conn)
    dialect: Any = lean.dialect
    dbapi = dialect.loaded_dbapi
    try:
        adapted._handle_exception(error)
    except Exception as translated:
        driver_error: Exception = translated
    if not isinstance(driver_error, dbapi.Error):
        return driver_error
    if isinstance(driver_error, getattr(dbapi, "InvalidCachedStatementError", ())):
        dialect._invalidate_schema_cache()
    disconnect = bool(dialect.is_disconnect(driver_error, adapted, None))
    wrapped = cast(
        sa_exc.DBAPIError,
        sa_exc.DBAPIError.instance(
            statement,
            args,
            driver_error,
            dbapi.Error,
            connection_invalidated=disconnect,
            dialect=dialect,
        ),
    )
    if dialect._has_events:
        failure = ExceptionContextImpl(
            driver_error,
            wrapped,
            sync.engine,
            dialect,
            sync,
            None,
            statement,
            args,
            context,  # type: ignore[arg-type]
            disconnect,
            disconnect,
            False,
        )
        for listener in dialect.dispatch.handle_error:
            listener(failure)
    if disconnect:
        await conn.invalidate()
    return wrapped
