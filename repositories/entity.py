"""What the generic repository needs to know about an entity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy import ColumnElement, Table

from repositories.errors import ErrorContext
from repositories.filtering import FilterField, FilterKind
from repositories.json_paths import indexed_paths
from repositories.ordering import Order, parse_order_by

# Columns of repositories.tables.standard_columns() that every entity filters on.
STANDARD_FILTERABLE: Mapping[str, FilterKind] = {
    "id": "uuid",
    "create_time": "timestamp",
    "update_time": "timestamp",
    "delete_time": "timestamp",
    "created_by": "string",
    "updated_by": "string",
}


@dataclass(frozen=True)
class Entity:
    """A tenant-scoped table served by the generic repository.

    Attributes:
        resource_type: Singular name used in errors ("user").
        table: The Core table, built with tables.standard_columns().
        unique_fields: Unique index name -> the request field it guards.
        sortable: Field names clients may `order_by` (a NULL sorts after every value).
        filterable: Field name -> how `filter` may use it, beyond STANDARD_FILTERABLE.
        default_order: The order when the client gives none.
    """

    resource_type: str
    table: Table
    unique_fields: Mapping[str, str] = field(default_factory=dict)
    sortable: frozenset[str] = frozenset({"id", "create_time", "update_time"})
    filterable: Mapping[str, FilterKind] = field(default_factory=dict)
    default_order: str = "create_time"
    # Unique indexes only a race violates (see ErrorContext.racing).
    racing: frozenset[str] = frozenset()

    def sort_columns(self) -> dict[str, ColumnElement[Any]]:
        return {name: self.table.c[name] for name in self.sortable | {"id"}}

    @cached_property
    def order(self) -> Order:
        """The default order, parsed once."""
        return parse_order_by("", self.sort_columns(), self.default_order)

    def filter_fields(self) -> dict[str, FilterField]:
        """The entity's own filterable fields plus the standard columns every entity has."""
        kinds = {**STANDARD_FILTERABLE, **self.filterable}
        paths = indexed_paths(self.table)
        return {
            name: FilterField(self.table.c[name], kind, paths.get(name, frozenset()))
            for name, kind in kinds.items()
        }

    @property
    def errors(self) -> ErrorContext:
        # Ids are the server's UUIDs, or an upsert's (allow_missing): only two upserts
        # racing to create one id violate the primary key, and the loser, retried, updates.
        primary_key = self.table.primary_key.name
        racing = self.racing | {primary_key} if isinstance(primary_key, str) else self.racing
        return ErrorContext(self.resource_type, self.unique_fields, racing)
