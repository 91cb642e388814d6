"""The database side of a declared schema: the changes it implies, planned against
the database and against what was last applied, and applied when they lose nothing.

Additive changes apply by themselves: a new resource (its table, indexes, foreign
keys and, on PostgreSQL, the change-log triggers every entity table has), a new
column that is nullable or has a default, a longer string, a new or changed index.
Anything that may lose or misread data is refused, naming the field and the column:
a column or a resource the schema no longer has, a retyped column, a change of
nullability or of a reference. A rename is a drop and an add; the drop is refused.
`drop` is the explicit step for a column or table the schema no longer declares.

Every change is recorded in `repogate_schema` (migration 0006) with a snapshot of
the tables after it (schema/snapshot.py). It all runs on the connection
repositories.migrate hands over: one transaction, under the lock that serialises
instances, right after Alembic's upgrade; a refusal or a failed statement leaves
the database as it was.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Connection, Table, insert, inspect, select, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import AddConstraint, CreateColumn, CreateTable

from repositories import change_log
from repositories.tables import metadata as built_in_metadata
from repositories.tables import schema_history
from schema import snapshot
from schema.model import STANDARD_FIELDS, SchemaError

if TYPE_CHECKING:
    from schema.declared import Declared

log = logging.getLogger(__name__)

# Tables no declared resource may have, nor `drop` remove.
BUILT_IN = frozenset({*built_in_metadata.tables, "alembic_version", change_log.TABLE})
STANDARD_COLUMNS = frozenset({"tenant_id", "version", *STANDARD_FIELDS} - {"etag"})


@dataclass(frozen=True)
class Step:
    summary: str
    statements: tuple[str, ...]


@dataclass(frozen=True)
class Refusal:
    where: str  # "tasks.assignee", or "tasks" for a whole table
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class Refused(SchemaError):
    """The schema implies changes that are not applied by themselves."""

    def __init__(self, refusals: Sequence[Refusal]) -> None:
        self.refusals = tuple(refusals)
        listed = "\n".join(f"  {r}" for r in refusals)
        super().__init__(f"the schema's changes are refused; nothing was applied:\n{listed}")


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    refusals: tuple[Refusal, ...]
    snapshot: snapshot.Snapshot  # the tables once the steps ran
    digest: str
    recorded: str | None  # the digest of the last change applied, if any

    @property
    def statements(self) -> list[str]:
        return [s for step in self.steps for s in step.statements]

    @property
    def changes(self) -> bool:
        return bool(self.steps) or self.digest != self.recorded


def plan(conn: Connection, declared: Declared) -> Plan:
    """What `declared` implies for the database on `conn`; reads only."""
    dialect = conn.dialect
    wanted = snapshot.take(declared, dialect)
    recorded, last = last_applied(conn)
    existing = set(inspect(conn).get_table_names())
    steps: list[Step] = []
    refusals: list[Refusal] = []
    for table in declared.metadata.sorted_tables:
        if table.name in existing:
            alter = _Alter(conn, table, wanted[table.name], last.get(table.name))
            steps += alter.steps
            refusals += alter.refusals
        else:
            steps.append(_create(table, wanted[table.name], dialect))
    for name, entry in last.items():
        if name not in wanted and name in existing:
            refusals.append(
                Refusal(
                    name,
                    f"resource {entry['resource']} is no longer in the schema: dropping its "
                    "table loses its rows (a resource whose table was renamed looks the same). "
                    f"To drop it: repogate schema drop {name} --yes",
                )
            )
    return Plan(tuple(steps), tuple(refusals), wanted, snapshot.digest(wanted), recorded)


def apply(conn: Connection, declared: Declared) -> Plan:
    """Applies `declared`'s plan on `conn` (locked, in its transaction) and records it;
    raises Refused, changing nothing, when anything of it is refused."""
    planned = plan(conn, declared)
    if planned.refusals:
        raise Refused(planned.refusals)
    for step in planned.steps:
        log.info("schema: %s", step.summary)
        for statement in step.statements:
            _execute(conn, statement, step.summary)
    if planned.changes:
        record(conn, planned.snapshot, planned.statements)
    return planned


def last_applied(conn: Connection) -> tuple[str | None, snapshot.Snapshot]:
    """The digest and snapshot of the last change recorded; (None, {}) before any (or
    before migration 0006, for a plan of a database not yet migrated)."""
    if not inspect(conn).has_table(schema_history.name):
        return None, {}
    h = schema_history.c
    row = conn.execute(select(h.digest, h.snapshot).order_by(h.id.desc()).limit(1)).first()
    return (None, {}) if row is None else (row.digest, dict(row.snapshot))


def record(conn: Connection, taken: snapshot.Snapshot, statements: list[str]) -> None:
    conn.execute(
        insert(schema_history).values(
            applied_time=datetime.now(UTC),
            digest=snapshot.digest(taken),
            snapshot=taken,
            statements=statements,
        )
    )


def _execute(conn: Connection, statement: str, summary: str) -> None:
    try:
        conn.exec_driver_sql(statement)
    except DBAPIError as exc:
        raise SchemaError(f"{summary} failed, nothing was applied: {exc.orig}") from exc


def _create(table: Table, wanted: dict[str, Any], dialect: Dialect) -> Step:
    statements = [str(CreateTable(table).compile(dialect=dialect)).strip()]
    statements += [entry["ddl"] for entry in wanted["indexes"].values()]
    if dialect.name == "postgresql":
        # So that every process's cache hears of its writes (repositories/change_log.py).
        statements += change_log.create_triggers(table.name)
    return Step(f"create resource {wanted['resource']} (table {table.name})", tuple(statements))


class _Alter:
    """The steps and refusals that bring an existing table to its declaration. A table
    the history does not know (made before, or by hand) is compared by reflection
    alone: column names and nullability."""

    def __init__(
        self,
        conn: Connection,
        table: Table,
        wanted: dict[str, Any],
        last: dict[str, Any] | None,
    ) -> None:
        self.conn = conn
        self.dialect = conn.dialect
        self.table = table
        self.wanted = wanted
        self.last = last or {"columns": {}, "indexes": {}, "foreign_keys": {}}
        self.resource = wanted["resource"]
        self.steps: list[Step] = []
        self.refusals: list[Refusal] = []
        self.quoted = self.dialect.identifier_preparer.format_table(table)
        reflected = {c["name"]: c for c in inspect(conn).get_columns(table.name)}
        added = [c for c in table.columns if c.name not in reflected]
        for c in added:
            self._add(c)
        for c in table.columns:
            if c.name in reflected:
                self._compare(c, bool(reflected[c.name]["nullable"]))
        for name in reflected:
            if name not in table.columns:
                self._removed(name, [c.name for c in added])
        self._foreign_keys({c.name for c in added})
        self._indexes()

    def _refuse(self, column: str | None, reason: str) -> None:
        where = self.table.name if column is None else f"{self.table.name}.{column}"
        field = "" if column is None else f" (field {self.resource}.{column})"
        self.refusals.append(Refusal(where + field, reason))

    def _step(self, summary: str, *statements: str) -> None:
        self.steps.append(Step(f"{self.table.name}: {summary}", statements))

    def _add(self, c: Column[Any]) -> None:
        if not c.nullable and c.server_default is None:
            self._refuse(
                c.name,
                "a new column NOT NULL without a default cannot be added to a table that may "
                "hold rows: make the field optional, or give it a default",
            )
            return
        spec = str(CreateColumn(c).compile(dialect=self.dialect)).strip()
        self._step(f"add column {c.name}", f"ALTER TABLE {self.quoted} ADD COLUMN {spec}")

    def _compare(self, c: Column[Any], was_nullable: bool) -> None:
        now = self.wanted["columns"][c.name]
        was = self.last["columns"].get(c.name)
        if was is not None and was["type"] != now["type"]:
            if snapshot.widens(was["type"], now["type"]):
                self._widen(c, now["type"])
            else:
                self._refuse(
                    c.name,
                    f"retyped from {was['type']} to {now['type']}: stored values may not "
                    "read as the new type. Add a field of the new type instead",
                )
        if was_nullable and not c.nullable:
            self._refuse(
                c.name, "now NOT NULL: rows may hold NULL in it (the field lost `optional`?)"
            )
        elif c.nullable and not was_nullable:
            self._refuse(c.name, "now nullable: changing a column's nullability is not automatic")
        if was is not None and was["default"] != now["default"]:
            self._default(c, now["default"])

    def _widen(self, c: Column[Any], signature: str) -> None:
        if self.dialect.name != "postgresql":
            return  # SQLite does not enforce lengths: the record is all that changes
        sql_type = c.type.compile(dialect=self.dialect)
        self._step(
            f"lengthen {c.name} to {signature}",
            f"ALTER TABLE {self.quoted} ALTER COLUMN {self._quote(c.name)} TYPE {sql_type}",
        )

    def _default(self, c: Column[Any], default: str | None) -> None:
        # Repogate writes every column of a row it creates: the DEFAULT only fills rows
        # when a column is added. SQLite cannot alter it; the record changes all the same.
        if self.dialect.name != "postgresql":
            return
        column = f"ALTER TABLE {self.quoted} ALTER COLUMN {self._quote(c.name)}"
        change = "DROP DEFAULT" if default is None else f"SET DEFAULT {default}"
        self._step(f"default of {c.name}", f"{column} {change}")

    def _removed(self, name: str, added: list[str]) -> None:
        if name in STANDARD_COLUMNS:
            return
        renamed = (
            f" If it was renamed to {' or '.join(added)}: a rename is a drop and an add, and the "
            "drop is refused; add the new field beside the old one, copy the data, then drop."
            if added
            else ""
        )
        self._refuse(
            name,
            "the schema no longer has this field: dropping the column loses its data."
            f"{renamed} To drop it: repogate schema drop {self.table.name}.{name} --yes",
        )

    def _foreign_keys(self, added: set[str]) -> None:
        for fk in self.table.foreign_key_constraints:
            name = str(fk.name)
            now = self.wanted["foreign_keys"][name]
            was = self.last["foreign_keys"].get(name)
            new_columns = [c for c in now["columns"] if c in added]
            if new_columns:
                if self.dialect.name == "postgresql":
                    ddl = str(AddConstraint(fk).compile(dialect=self.dialect)).strip()
                    self._step(f"reference {name}", ddl)
                else:
                    self._refuse(
                        new_columns[0],
                        "a new reference on an existing table needs a foreign key, which "
                        "SQLite cannot add to a table in place",
                    )
            elif was is not None and was != now:
                self._refuse(
                    now["columns"][-1],
                    f"the reference changed from {was['definition']} to {now['definition']}: "
                    "not automatic",
                )

    def _indexes(self) -> None:
        present = _index_names(self.conn, self.table.name)
        wanted = self.wanted["indexes"]
        for name in self.last["indexes"]:
            if name in present and name not in wanted:
                self._step(f"drop index {name}, no longer declared", f"DROP INDEX {name}")
        for name, entry in wanted.items():
            was = self.last["indexes"].get(name)
            if name not in present:
                self._step(f"create index {name}", entry["ddl"])
            elif was is not None and was["ddl"] != entry["ddl"]:
                self._step(f"recreate index {name}, changed", f"DROP INDEX {name}", entry["ddl"])

    def _quote(self, name: str) -> str:
        return str(self.dialect.identifier_preparer.quote(name))


def _index_names(conn: Connection, table: str) -> set[str]:
    if conn.dialect.name == "sqlite":
        # SQLAlchemy skips SQLite's expression indexes (lower(name)) when reflecting.
        rows = conn.execute(
            text(
                "SELECT name FROM sqlite_master "
                "WHERE type = 'index' AND tbl_name = :table AND sql IS NOT NULL"
            ),
            {"table": table},
        )
        return {row[0] for row in rows}
    return {str(i["name"]) for i in inspect(conn).get_indexes(table)}


# ------------------------------------------------------------ the explicit drop


def drop_statements(conn: Connection, target: str, declared: Declared | None) -> list[str]:
    """What `repogate schema drop TARGET` runs: TARGET a table or table.column that
    the schema (if any) no longer declares. Raises SchemaError saying why not."""
    table, _, column = target.partition(".")
    inspector = inspect(conn)
    if table in BUILT_IN:
        raise SchemaError(f"{table} is Repogate's own table; its migrations manage it")
    if not inspector.has_table(table):
        raise SchemaError(f"{table}: no such table")
    if not inspector.has_table(schema_history.name):
        raise SchemaError("the database has no schema history: run `repogate migrate` first")
    declared_table = _declared_table(declared, table)
    quoted = conn.dialect.identifier_preparer.quote(table)
    if not column:
        if declared_table is not None:
            raise SchemaError(f"{table}: the schema still declares it; remove the resource first")
        for other in inspector.get_table_names():
            for fk in inspector.get_foreign_keys(other):
                if other != table and fk["referred_table"] == table:
                    raise SchemaError(f"{table}: {other} refers to it; drop {other} first")
        return [f"DROP TABLE {quoted}"]
    if column in STANDARD_COLUMNS:
        raise SchemaError(f"{target}: every resource table has this column")
    if column not in {c["name"] for c in inspector.get_columns(table)}:
        raise SchemaError(f"{target}: no such column")
    if declared_table is not None and column in declared_table.columns:
        raise SchemaError(f"{target}: the schema still declares the field; remove it first")
    statements = []
    if conn.dialect.name == "sqlite":
        # SQLite drops no column an index names; PostgreSQL drops those indexes with it.
        for fk in inspector.get_foreign_keys(table):
            if column in fk["constrained_columns"]:
                raise SchemaError(f"{target}: SQLite cannot drop a column a foreign key names")
        statements += [f"DROP INDEX {name}" for name in _sqlite_indexes_of(conn, table, column)]
    column_quoted = conn.dialect.identifier_preparer.quote(column)
    statements.append(f"ALTER TABLE {quoted} DROP COLUMN {column_quoted}")
    return statements


def drop(conn: Connection, target: str, declared: Declared | None) -> list[str]:
    """Drops TARGET (see drop_statements) on `conn`, locked and in its transaction,
    and records the change; returns the statements run."""
    statements = drop_statements(conn, target, declared)
    for statement in statements:
        _execute(conn, statement, f"drop {target}")
    table, _, column = target.partition(".")
    _, last = last_applied(conn)
    record(conn, snapshot.without(last, table, column or None), statements)
    return statements


def _declared_table(declared: Declared | None, table: str) -> Table | None:
    if declared is None:
        return None
    return declared.metadata.tables.get(table)


def _sqlite_indexes_of(conn: Connection, table: str, column: str) -> list[str]:
    rows = conn.execute(
        text(
            "SELECT name, sql FROM sqlite_master "
            "WHERE type = 'index' AND tbl_name = :table AND sql IS NOT NULL"
        ),
        {"table": table},
    )
    named = re.compile(rf"\b{re.escape(column)}\b")
    # The part after "ON table": the indexed columns and expressions, and WHERE.
    return [name for name, sql in rows if named.search(sql.split("(", 1)[-1])]
