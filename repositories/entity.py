"""What the generic repository needs to know about an entity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import Table

from repositories.errors import ErrorContext


@dataclass(frozen=True)
class Entity:
    """A tenant-scoped table served by the generic repository.

    Attributes:
        resource_type: Singular name used in errors ("user").
        table: The Core table; it must have tenant_id, id, version,
            create_time and update_time columns.
        unique_fields: Unique index name -> the request field it guards.
    """

    resource_type: str
    table: Table
    unique_fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def errors(self) -> ErrorContext:
        return ErrorContext(self.resource_type, self.unique_fields)
