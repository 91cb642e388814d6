"""What the generic repository needs of a resource (`repositories.entity.Entity`), read
from the options of its message: for declared resources and the built-in ones alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import Table

from repositories.entity import Entity
from repositories.filtering import FilterKind
from schema import tables
from schema.model import ResourceSpec, resource_spec

FILTER_KINDS: dict[str, FilterKind] = {
    "string": "string",
    "enum": "string",
    "int32": "int",
    "int64": "int",
    "double": "float",
    "bool": "bool",
    "timestamp": "timestamp",
    "uuid": "uuid",
    "list": "json_array",
    "struct": "json_object",
}
# Standard columns every resource sorts by.
_SORTABLE = frozenset({"id", "create_time", "update_time"})


def entity(
    spec: ResourceSpec, table: Table, filter_kinds: Mapping[str, FilterKind] | None = None
) -> Entity:
    """`filter_kinds`: for a field whose column is not what its proto type suggests (a
    decimal held in a string field, stored as a number), how filters read it."""
    kinds = {f.name: FILTER_KINDS[f.kind] for f in spec.fields if f.options.filterable}
    unique = {tables.unique_index(spec, f): f.name for f in spec.fields if f.options.unique}
    return Entity(
        resource_type=spec.singular,
        table=table,
        unique_fields=unique,
        sortable=_SORTABLE | {f.name for f in spec.fields if f.options.sortable},
        filterable={**kinds, **(filter_kinds or {})},
        default_order=spec.default_order,
        # Two transactions that took the same number (repeatable read) conflict.
        racing=frozenset(
            tables.sequence_index(spec, f) for f in spec.fields if f.options.HasField("sequence")
        ),
    )


def entity_of(
    message_cls: type[Message],
    table: Table,
    filter_kinds: Mapping[str, FilterKind] | None = None,
) -> Entity:
    """The Entity a resource message declares, over its `table`."""
    descriptor: Any = message_cls.DESCRIPTOR
    return entity(resource_spec(descriptor), table, filter_kinds)
