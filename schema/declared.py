"""From a loaded schema to what the generic layers serve: per resource its table,
entity, repository class and `Resource` (mapping, checks, defaults, rules)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import MetaData, Table

from repositories.base import Repository
from repositories.tables import metadata as built_in_metadata
from schema import related, rules, tables
from schema.entities import entity
from schema.loading import Schema
from schema.model import ResourceSpec, is_resource, resource_spec
from schema.repository import DeclaredRepository, repository_class
from server import validation
from server.mapping import M, MessageMapping
from server.resource_types import Resource


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
    built = tables.build(schema.resources.values(), metadata)
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
        resources[full_name] = _resource(spec, repo, schema)
    for full_name, spec in schema.resources.items():
        bound = related.relations(spec, lambda m: schema.resources.get(m.full_name), resources)
        resources[full_name] = replace(resources[full_name], related=bound)
    return Declared(schema, metadata, built, resources)


def _optional_uuid(value: Any) -> str | None:
    return None if value is None else validation.uuid_text(value)


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
        entity(spec, table),
        references=bool(references),
        mutable_references=any(f.writable and not f.options.immutable for f in references),
        sequence=(sequence.name, sequence.options.sequence.parent) if sequence else None,
        purges=purges,
    )


def _resource(
    spec: ResourceSpec,
    repo: type[DeclaredRepository],
    schema: Schema,
) -> Resource[Any]:
    checks: dict[str, validation.Check] = {}
    for f in spec.fields:
        if f.kind == "uuid":
            checks[f.name] = _optional_uuid if f.nullable else validation.uuid_text
        elif f.kind in ("struct", "list"):
            checks[f.name] = validation.json_document
        elif f.kind == "timestamp":
            checks[f.name] = validation.moment
    shown = functools.partial(rules.check, ignored=spec.unstored) if spec.unstored else rules.check
    return resource(spec, repo, schema.message_class(spec.message), checks, rules=shown)


def resource(
    spec: ResourceSpec,
    repo: type[Repository],
    message_cls: type[M],
    checks: Mapping[str, validation.Check],
    *,
    rules: Callable[[Message, Collection[str] | None, str], None] | None = None,
) -> Resource[M]:
    """The Resource a spec declares: which fields a create and an update write, which a
    create needs, what it stores when they are unset. `checks` are the field checks
    beyond the declared rules; enum fields get theirs here."""
    writable = [f for f in spec.fields if f.writable]
    columns = repo.entity.table.c
    all_checks = dict(checks)
    for f in writable:
        if f.kind == "enum" and f.name not in all_checks:
            all_checks[f.name] = validation.one_of(tables.enum_names(f).values())
    # Unset writable fields, and server-set ones with a declared default, get a value on
    # create; the rest are left to the repository and the column.
    defaults = {
        f.name: tables.stored_default(f)
        for f in spec.fields
        if (f.writable and not f.options.required) or (not f.writable and f.options.default)
    }
    mapping = MessageMapping(
        message_cls,
        updatable=[f.name for f in writable if not f.options.immutable],
        immutable=[f.name for f in writable if f.options.immutable],
        references=[f.name for f in spec.fields if f.reference],
        # Cleared by an update that names them unset; a built-in's column may hold a
        # default instead (Session.preferences).
        nullable=[f.name for f in writable if f.nullable and columns[f.name].nullable],
        unmapped=spec.unstored,
    )
    return Resource(
        name=spec.singular,
        repository=repo,
        mapping=mapping,
        checks=all_checks,
        required=frozenset(f.name for f in writable if f.options.required),
        create_defaults={k: v for k, v in defaults.items() if v is not None},
        rules=rules,
    )


def resource_of(
    message_cls: type[M],
    repo: type[Repository],
    checks: Mapping[str, validation.Check],
    *,
    related_to: Collection[Resource[Any]] = (),
) -> Resource[M]:
    """The Resource a built-in resource message declares; `related_to`: the resources its
    related fields show."""
    descriptor: Any = message_cls.DESCRIPTOR
    spec = resource_spec(descriptor)
    made = resource(spec, repo, message_cls, checks)
    served = {r.mapping.message_cls.DESCRIPTOR.full_name: r for r in related_to}
    bound = related.relations(spec, _built_in, served)
    return replace(made, related=bound) if bound else made


def _built_in(message: Any) -> ResourceSpec | None:
    return resource_spec(message) if is_resource(message) else None
