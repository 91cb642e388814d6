"""Standard methods (AIP-131..135) for any resource, shared by every servicer.

A servicer declares its resource once (repository, mapping, field checks) and
each RPC becomes a line or two calling into this class.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic

from google.protobuf import field_mask_pb2

from repositories.base import Cursor, Repository, Row
from repositories.database import Database
from repositories.errors import InvalidArgument
from server import context, validation
from server.mapping import M, MessageMapping, parse_etag
from server.page_tokens import PageTokens


@dataclass(frozen=True)
class Resource(Generic[M]):
    """Everything the standard methods need to know about one resource."""

    name: str  # the request field holding the resource: "user"
    repository: type[Repository]
    mapping: MessageMapping[M]
    checks: Mapping[str, validation.Check]
    # Fields a create must populate.
    required: frozenset[str]
    # Values a create gets for writable fields the client left unset.
    create_defaults: Mapping[str, Any]


class StandardMethods(Generic[M]):
    def __init__(self, resource: Resource[M], db: Database, tokens: PageTokens) -> None:
        self._r = resource
        self._db = db
        self._tokens = tokens

    async def create(self, message: M) -> M:
        mapping = self._r.mapping
        values = {
            **self._r.create_defaults,
            **mapping.to_values(message, mapping.populated(message)),
        }
        validation.require(values, self._r.required, self._r.name)
        self._check(values)
        async with self._db.unit_of_work(context.tenant()) as uow:
            row = await uow.repository(self._r.repository).create(values)
            await uow.commit()
        return mapping.to_message(row)

    async def get(self, id_: str) -> M:
        key = validation.resource_id(id_, "id")
        async with self._db.unit_of_work(context.tenant(), read_only=True) as uow:
            row = await uow.repository(self._r.repository).get(key)
        return self._r.mapping.to_message(row)

    async def page(self, page_size: int, page_token: str) -> tuple[list[M], str]:
        limit = validation.page_size(page_size)
        tenant = context.tenant()
        query = f"{self._r.name}|{tenant}"
        after = self._cursor(self._tokens.decode(page_token, query)) if page_token else None
        async with self._db.unit_of_work(tenant, read_only=True) as uow:
            rows, more = await uow.repository(self._r.repository).page(limit, after)
        token = self._tokens.encode(_position(rows[-1]), query) if more else ""
        return [self._r.mapping.to_message(row) for row in rows], token

    async def update(self, message: M, mask: field_mask_pb2.FieldMask | None) -> M:
        mapping, name = self._r.mapping, self._r.name
        key = validation.resource_id(getattr(message, "id", ""), f"{name}.id")
        version = parse_etag(getattr(message, "etag", ""), f"{name}.etag")
        values = mapping.to_values(message, mapping.mask_paths(message, mask))
        if not values:
            raise InvalidArgument.field("update_mask", "names no field to update")
        self._check(values)
        async with self._db.unit_of_work(context.tenant()) as uow:
            row = await uow.repository(self._r.repository).update(key, values, version)
            await uow.commit()
        return mapping.to_message(row)

    async def delete(self, id_: str, etag: str) -> M:
        key = validation.resource_id(id_, "id")
        version = parse_etag(etag, "etag")
        async with self._db.unit_of_work(context.tenant()) as uow:
            row = await uow.repository(self._r.repository).delete(key, version)
            await uow.commit()
        return self._r.mapping.to_message(row)

    def _check(self, values: Mapping[str, Any]) -> None:
        validation.check_fields(values, self._r.checks, self._r.name)

    @staticmethod
    def _cursor(position: list[Any]) -> Cursor:
        try:
            create_time, id_ = position
            return datetime.fromisoformat(create_time), uuid.UUID(id_)
        except (TypeError, ValueError):
            raise InvalidArgument.field(
                "page_token", "is malformed", reason="INVALID_PAGE_TOKEN"
            ) from None


def _position(row: Row) -> list[Any]:
    return [row["create_time"].isoformat(), str(row["id"])]
