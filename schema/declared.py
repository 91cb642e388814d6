"""From a loaded schema to what the generic layers serve: per resource its table,
entity, repository class and `Resource` (mapping, checks, defaults, rules)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import MetaData, Table

from repositories.entity import Entity
from repositories.filtering import FilterKind
from repositories.tables import metadata as built_in_metadata
from schema import rules, tables
from schema.loading import Schema
from schema.model import FieldSpec, ResourceSpec
from schema.repository import DeclaredRepository, repository_class
from server import validation
from server.mapping import MessageMapping, stored_enum_names
from server.resources import Resource

_FILTER_KINDS: dict[str, FilterKind] = {
    "string": "string",
    "enum": "string",
    "int32": "int",
    "int64": "int",
    "double": "float",
    "bool": "bool",
    "timestamp": "timestamp",
    "uuid": "uuid",
    "list": "json_array",
}
# Standard columns every resource sorts by.
_SORTABLE = frozenset({"id", "create_time", "update_time"})


@dataclass(frozen=True)
class Declared:
    """One schema's resources, ready to serve."""

    schema: Schema
    metadata: MetaData
    tables: dict[str, Table]  # by resource message full name
    resources: dict[str, Resource[Any]]  # by resource message full name

    def spec(self, message: str) -> ResourceSpec:
        return self.schema.resources[message]


def declare(schema: Schema) -> Declared:
    metadata = MetaData(naming_convention=built_in_metadata.naming_convention)
    enums = {
        f"{spec.message.full_name}.{f.name}": _enum_names(f)
        for spec in schema.resources.values()
        for f in spec.fields
        if f.kind == "enum"
    }
    built = tables.build(schema.resources.values(), metadata, enums)
    repositories: dict[str, type[DeclaredRepository]] = {}
    resources: dict[str, Resource[Any]] = {}
    for full_name, spec in schema.resources.items():
        table = built[full_name]
        repositories[full_name] = _repository(spec, table, _purged_with(table, built.values()))
    for full_name, spec in schema.resources.items():
        repo = repositories[full_name]
        for f in spec.fields:
            if f.reference:
                parent = schema.resource(f.reference).message.full_name
                repo.references[f.name] = repositories[parent]
        resources[full_name] = _resource(spec, repo, schema, enums)
    return Declared(schema, metadata, built, resources)


def _optional_uuid(value: Any) -> str | None:
    return None if value is None else validation.uuid_text(value)


def _enum_names(f: FieldSpec) -> dict[str, str]:
    """Declared value name -> the name stored (see server.mapping.stored_enum_names)."""
    enum = f.descriptor.enum_type
    assert enum is not None
    stored = stored_enum_names(enum)
    return {v.name: stored[v.number] for v in enum.values if v.number}


def _entity(spec: ResourceSpec, table: Table) -> Entity:
    unique = {tables.unique_index(spec, f): f.name for f in spec.fields if f.options.unique}
    sortable = _SORTABLE | {f.name for f in spec.fields if f.options.sortable}
    filterable = {f.name: _FILTER_KINDS[f.kind] for f in spec.fields if f.options.filterable}
    return Entity(
        resource_type=spec.singular,
        table=table,
        unique_fields=unique,
        sortable=frozenset(sortable),
        filterable=filterable,
        default_order=spec.default_order,
    )


def _purged_with(table: Table, tables: Collection[Table]) -> tuple[str, ...]:
    """The tables whose rows the database changes when rows of `table` are deleted for
    good: children deleted (ON DELETE CASCADE, and theirs in turn) or cleared (SET NULL)."""
    found: list[str] = []
    parents = [table]
    while parents:
        parent = parents.pop()
        for child in tables:
            for key in child.foreign_key_constraints:
                action = (key.ondelete or "").upper()
                if key.referred_table is not parent or action not in ("CASCADE", "SET NULL"):
                    continue
                if child.name not in found:
                    found.append(child.name)
                    if action == "CASCADE":
                        parents.append(child)
    return tuple(found)


def _repository(
    spec: ResourceSpec, table: Table, purges: tuple[str, ...]
) -> type[DeclaredRepository]:
    sequence = spec.sequence
    references = [f for f in spec.fields if f.reference]
    return repository_class(
        spec.message.name,
        _entity(spec, table),
        references=bool(references),
        mutable_references=any(f.writable and not f.options.immutable for f in references),
        sequence=(sequence.name, sequence.options.sequence.parent) if sequence else None,
        purges=purges,
    )


def _resource(
    spec: ResourceSpec,
    repo: type[DeclaredRepository],
    schema: Schema,
    enums: dict[str, dict[str, str]],
) -> Resource[Any]:
    writable = [f for f in spec.fields if f.writable]
    checks: dict[str, validation.Check] = {}
    for f in writable:
        if f.kind == "enum":
            checks[f.name] = validation.one_of(enums[f"{spec.message.full_name}.{f.name}"].values())
        elif f.kind == "uuid":
            checks[f.name] = _optional_uuid if f.nullable else validation.uuid_text
        elif f.kind in ("struct", "list"):
            checks[f.name] = validation.json_document
    defaults = {
        f.name: tables.stored_default(f, enums.get(f"{spec.message.full_name}.{f.name}"))
        for f in writable
        if not f.options.required
    }
    mapping = MessageMapping(
        schema.message_class(spec.message),
        updatable=[f.name for f in writable if not f.options.immutable],
        immutable=[f.name for f in writable if f.options.immutable],
        references=[f.name for f in spec.fields if f.reference],
        nullable=[f.name for f in writable if f.nullable],
    )
    return Resource(
        name=spec.singular,
        repository=repo,
        mapping=mapping,
        checks=checks,
        required=frozenset(f.name for f in writable if f.options.required),
        create_defaults=defaults,
        rules=rules.check,
    )
