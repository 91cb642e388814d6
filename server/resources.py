"""Standard methods (AIP-131..135) for any resource, shared by every servicer.

A servicer declares its resource once (repository, mapping, field checks) and
each RPC becomes a line or two calling into this class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol

from google.protobuf import field_mask_pb2

from repositories.base import Repository
from repositories.database import Database
from repositories.errors import InvalidArgument
from repositories.filtering import compile_filter
from repositories.ordering import Order, parse_order_by, position_from, position_of
from server import context, validation
from server.mapping import M, MessageMapping, parse_etag
from server.page_tokens import PageTokens


class ListRequest(Protocol):
    """The AIP-132 fields every List request message has."""

    page_size: int
    page_token: str
    filter: str
    order_by: str
    skip: int


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

    async def page(self, request: ListRequest) -> tuple[list[M], str]:
        """AIP-132 List with AIP-158 pages, AIP-160 filter and order_by."""
        limit = validation.page_size(request.page_size)
        if request.skip < 0:
            raise InvalidArgument.field("skip", "must not be negative")
        tenant = context.tenant()
        entity = self._r.repository.entity
        where = compile_filter(request.filter, entity.filter_fields())
        order = parse_order_by(request.order_by, entity.sort_columns(), entity.default_order)
        query = f"{self._r.name}|{tenant}|{request.filter}|{request.order_by}"
        after = self._position(order, request.page_token, query) if request.page_token else None
        async with self._db.unit_of_work(tenant, read_only=True) as uow:
            repo = uow.repository(self._r.repository)
            rows, more = await repo.page(limit, after, where=where, order=order, skip=request.skip)
        token = self._tokens.encode(position_of(order, rows[-1]), query) if more else ""
        return [self._r.mapping.to_message(row) for row in rows], token

    async def count(self, filter_: str) -> int:
        entity = self._r.repository.entity
        where = compile_filter(filter_, entity.filter_fields())
        async with self._db.unit_of_work(context.tenant(), read_only=True) as uow:
            return await uow.repository(self._r.repository).count(where)

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

    def _position(self, order: Order, token: str, query: str) -> list[Any]:
        try:
            return position_from(order, self._tokens.decode(token, query))
        except (TypeError, ValueError):
            raise InvalidArgument.field(
                "page_token", "is malformed", reason="INVALID_PAGE_TOKEN"
            ) from None
