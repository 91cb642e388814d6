"""A resource's table, columns and indexes, derived from its spec.

The same naming convention as the built-in tables (repositories.tables), so that
the migration plan names what it creates as they do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    false,
    func,
    text,
    true,
)
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import TypeEngine

from repogate.options.v1 import options_pb2
from repositories.json_paths import path_index_expression
from repositories.tables import live_unique, purge_index, standard_columns
from repositories.types import UTCDateTime, json_document
from schema.model import FieldSpec, ResourceSpec, SchemaError
from server.mapping import stored_enum_names

# PostgreSQL cuts longer names short without a word; Repogate shortens them itself.
MAX_NAME = 63
_ON_DELETE = {
    options_pb2.ON_DELETE_UNSPECIFIED: "RESTRICT",
    options_pb2.ON_DELETE_RESTRICT: "RESTRICT",
    options_pb2.ON_DELETE_CASCADE: "CASCADE",
    options_pb2.ON_DELETE_SET_NULL: "SET NULL",
}
_ZERO: dict[str, Any] = {
    "string": "",
    "enum": None,
    "int32": 0,
    "int64": 0,
    "double": 0.0,
    "bool": False,
    "bytes": b"",
    "struct": {},
    "list": [],
}


def column_type(f: FieldSpec) -> TypeEngine[Any]:
    if f.kind == "string" and f.max_length:
        # Bounded: the server knows the largest answer a row makes (server/answers.py).
        return String(f.max_length)
    types: dict[str, TypeEngine[Any]] = {
        "string": Text(),
        "enum": Text(),
        "int32": Integer(),
        "int64": BigInteger(),
        "double": Float(53),
        "bool": Boolean(),
        "bytes": LargeBinary(),
        "timestamp": UTCDateTime(),
        "struct": json_document(),
        "list": json_document(),
        "uuid": Uuid(as_uuid=True),
    }
    return types[f.kind]


def enum_names(f: FieldSpec) -> dict[str, str]:
    """An enum field's declared value names -> the names stored (see
    server.mapping.stored_enum_names); UNSPECIFIED has none."""
    enum = f.descriptor.enum_type
    assert enum is not None
    stored = stored_enum_names(enum)
    return {v.name: stored[v.number] for v in enum.values if v.number}


def stored_default(f: FieldSpec) -> Any:
    """The value a create stores when the client sets none: the declared default (an
    enum's by its stored name), else the kind's zero; None for nullable fields."""
    if f.default is not None:
        if f.kind == "enum":
            return enum_names(f)[f.default]
        return f.default
    if f.nullable or f.kind in ("timestamp", "uuid") or f.options.HasField("sequence"):
        return None
    return _ZERO[f.kind]


def name(*parts: str) -> str:
    """An identifier from `parts`, shortened with a digest past PostgreSQL's limit."""
    full = "_".join(parts)
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: MAX_NAME - 9]}_{digest}"


def build(specs: Iterable[ResourceSpec], metadata: MetaData) -> dict[str, Table]:
    """Each resource's table in `metadata`, by the resource message's full name."""
    specs = list(specs)
    by_message = {spec.message.full_name: spec for spec in specs}
    tables = {}
    for spec in specs:
        tables[spec.message.full_name] = _table(spec, metadata, by_message)
    return tables


def _table(
    spec: ResourceSpec,
    metadata: MetaData,
    by_message: dict[str, ResourceSpec],
) -> Table:
    columns: list[Any] = []
    for f in spec.fields:
        value = stored_default(f)
        columns.append(
            Column(
                f.name,
                column_type(f),
                nullable=f.nullable
                or ((f.kind in ("timestamp", "uuid") and value is None) and not f.options.required),
                default=value,
                server_default=_server_default(f, value),
            )
        )
        if f.reference:
            parent = _referred(spec, f, by_message)
            ondelete = _ON_DELETE[f.options.reference.on_delete]
            columns.append(
                ForeignKeyConstraint(
                    ["tenant_id", f.name],
                    [f"{parent.table}.tenant_id", f"{parent.table}.id"],
                    name=name("fk", spec.table, f.name),
                    ondelete=ondelete,
                )
            )
    table = Table(spec.table, metadata, *standard_columns(), *columns)
    t = spec.table
    c = table.c
    order = [part.strip().split()[0] for part in spec.default_order.split(",")]
    Index(name("ix", t, "tenant", *order), c.tenant_id, *(c[o] for o in order), c.id)
    if order != ["create_time"]:
        Index(name("ix", t, "tenant_create_time"), c.tenant_id, c.create_time, c.id)
    for f in spec.fields:
        o = f.options
        if o.unique:
            column = func.lower(c[f.name]) if o.case_insensitive else c[f.name]
            live_unique(unique_index(spec, f), c.tenant_id, column)
        if f.reference and f.name not in order[:1]:
            Index(name("ix", t, "tenant", f.name), c.tenant_id, c[f.name])
        if o.HasField("sequence"):
            numbered = o.sequence.parent
            Index(
                sequence_index(spec, f),
                c.tenant_id,
                c[numbered],
                c[f.name],
                unique=True,
            )
        if o.searchable or (o.filterable and f.kind == "list"):
            # Containment (@>): Struct paths `payload.a = 1`, `payload.tags:"x"`, and
            # membership in a repeated field, `tags:"x"`.
            Index(
                name("ix", t, f.name),
                c[f.name],
                postgresql_using="gin",
                postgresql_ops={f.name: "jsonb_path_ops"},
            ).ddl_if(dialect="postgresql")
    for index in spec.indexes:
        parts = [part.split() for part in index.fields]
        exprs = [
            _indexed(c, p[0]).desc() if p[1:] == ["desc"] else _indexed(c, p[0]) for p in parts
        ]
        words = [p[0].replace(".", "_") for p in parts]
        if index.unique:
            live_unique(name("uq", t, "tenant", *words), c.tenant_id, *exprs)
        else:
            Index(name("ix", t, "tenant", *words), c.tenant_id, *exprs)
    purge_index(table)
    named = [str(i.name) for i in table.indexes]
    if len(set(named)) < len(named):
        twice = sorted({n for n in named if named.count(n) > 1})
        raise SchemaError(f"{spec.message.full_name}: two indexes are named {', '.join(twice)}")
    return table


def _indexed(c: Any, field: str) -> Any:
    """A column, or for `payload.a.b` the JSON value at the path, as filters on it compare."""
    head, *path = field.split(".")
    return path_index_expression(c[head], tuple(path)) if path else c[head]


def sequence_index(spec: ResourceSpec, f: FieldSpec) -> str:
    return name("uq", spec.table, "tenant", f.options.sequence.parent, f.name)


def unique_index(spec: ResourceSpec, f: FieldSpec) -> str:
    return name("uq", spec.table, "tenant", f.name)


def _referred(
    spec: ResourceSpec, f: FieldSpec, by_message: dict[str, ResourceSpec]
) -> ResourceSpec:
    wanted = f.reference
    found = by_message.get(wanted) or next(
        (s for s in by_message.values() if s.message.name == wanted), None
    )
    if found is None:
        from schema.model import SchemaError

        raise SchemaError(
            f"{spec.message.full_name}.{f.name}: refers to {wanted!r}, no resource of this schema"
        )
    return found


def _server_default(f: FieldSpec, value: Any) -> TextClause | Any:
    """The column's DEFAULT, so that adding the column to a table holding rows fills them."""
    if value is None:
        return None
    if f.kind == "bool":
        return true() if value else false()
    if f.kind in ("struct", "list"):
        literal = json.dumps(value, separators=(",", ":")).replace("'", "''")
        return text(f"'{literal}'")
    if isinstance(value, str):
        return value  # SQLAlchemy quotes it
    if isinstance(value, (int, float)):
        return text(repr(value))
    return None
