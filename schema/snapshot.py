"""The shape of a schema's tables as a JSON document: what the history table
(`repogate_schema`) records after each change, and what the next start compares
the declared schema against.

Reflection cannot tell a retyped column portably (SQLite reflects loose types, and
a Struct and a repeated string are both JSON columns), so each column's entry names
the field's kind besides its SQL type: "string VARCHAR(64)", "list<int64> JSONB".
An index's entry is its CREATE INDEX, so a changed definition under the same name
shows too.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, ForeignKeyConstraint, Index, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex

from schema.model import FieldSpec

if TYPE_CHECKING:
    from schema.declared import Declared

# table -> {"resource": message, "columns": {...}, "indexes": {...}, "foreign_keys": {...}}
Snapshot = dict[str, dict[str, Any]]
_LENGTH = re.compile(r"\bVARCHAR\((\d+)\)$")


def take(declared: Declared, dialect: Dialect) -> Snapshot:
    """The declared tables as they are created on `dialect`."""
    taken: Snapshot = {}
    for full_name, table in declared.tables.items():
        spec = declared.spec(full_name)
        kinds = {f.name: kind(f) for f in spec.fields}
        taken[table.name] = {
            "resource": full_name,
            "columns": {c.name: column(c, kinds.get(c.name, ""), dialect) for c in table.columns},
            "indexes": {i.name: index(i, dialect) for i in made_on(table, dialect)},
            "foreign_keys": {str(fk.name): foreign_key(fk) for fk in table.foreign_key_constraints},
        }
    return taken


def digest(snapshot: Snapshot) -> str:
    return hashlib.sha256(canonical(snapshot).encode()).hexdigest()


def canonical(snapshot: Snapshot) -> str:
    return json.dumps(snapshot, sort_keys=True, separators=(",", ":"))


def kind(f: FieldSpec) -> str:
    return f"list<{f.element}>" if f.kind == "list" else f.kind


def column(c: Column[Any], field_kind: str, dialect: Dialect) -> dict[str, Any]:
    sql_type = c.type.compile(dialect=dialect)
    return {
        "type": f"{field_kind} {sql_type}".strip(),
        "nullable": bool(c.nullable),
        "default": _ddl_compiler(dialect).get_column_default_string(c),
    }


def _ddl_compiler(dialect: Dialect) -> Any:
    # Without a statement: for its helpers only.
    return dialect.ddl_compiler(dialect, None)  # type: ignore[arg-type]


def made_on(table: Table, dialect: Dialect) -> list[Index]:
    """The table's indexes this dialect gets (the GIN ones are PostgreSQL's only)."""
    found = []
    for i in sorted(table.indexes, key=lambda i: str(i.name)):
        only = getattr(i, "_ddl_if", None)
        if only is None or only.dialect in (None, dialect.name):
            found.append(i)
    return found


def index(i: Index, dialect: Dialect) -> dict[str, Any]:
    return {
        "ddl": str(CreateIndex(i).compile(dialect=dialect)).strip(),
        "columns": sorted({c.name for c in i.columns}),
    }


def foreign_key(fk: ForeignKeyConstraint) -> dict[str, Any]:
    referred = ", ".join(e.column.name for e in fk.elements)
    return {
        "columns": list(fk.column_keys),
        "definition": f"{fk.referred_table.name} ({referred}) ON DELETE {fk.ondelete}",
    }


def widens(was: str, now: str) -> bool:
    """Whether type signature `now` only lengthens the string column `was`: VARCHAR(n)
    to a longer VARCHAR, or to TEXT. Every value fits; nothing is rewritten."""
    before, after = was.split(" ", 1), now.split(" ", 1)
    if before[0] != "string" or after[0] != "string" or len(before) < 2 or len(after) < 2:
        return False
    old = _LENGTH.search(before[1])
    if old is None:
        return False
    new = _LENGTH.search(after[1])
    return after[1] == "TEXT" if new is None else int(new.group(1)) > int(old.group(1))


def without(snapshot: Snapshot, table: str, column_name: str | None = None) -> Snapshot:
    """`snapshot` after dropping `table`, or only its column (with what named it)."""
    kept = json.loads(canonical(snapshot))
    if column_name is None:
        kept.pop(table, None)
        return dict(kept)
    entry = kept.get(table)
    if entry is None:
        return dict(kept)
    entry["columns"].pop(column_name, None)
    for part in ("indexes", "foreign_keys"):
        entry[part] = {
            name: value
            for name, value in entry[part].items()
            if column_name not in value["columns"]
        }
    return dict(kept)
