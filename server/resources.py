"""Standard methods (AIP-131..135, 154, 155, 158, 160, 164, 231..235) for any
resource, shared by every servicer.

A servicer declares its resource once (repository, mapping, field checks) and
each RPC becomes a line calling into this class with the request message.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Protocol

from google.protobuf.message import Message
from sqlalchemy import ColumnElement, and_

from repogate.v1 import query_pb2
from repositories.base import Repository, Row
from repositories.database import RepositorySource
from repositories.errors import AlreadyExists, Conflict, InvalidArgument
from repositories.filtering import Filters
from repositories.ordering import Order, parse_order_by, position_from, position_of
from repositories.request_log import Recorded, RequestLog
from server import context, validation
from server.mapping import M, MessageMapping, parse_etag
from server.page_tokens import PageTokens
from server.read_through import ReadThrough
from server.units import Units

CountMode = query_pb2.CountMode


class ListRequest(Protocol):
    """The fields every List request message has."""

    page_size: int
    page_token: str
    filter: str
    order_by: str
    skip: int
    show_deleted: bool
    count_mode: Any  # the generated CountMode enum


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


@dataclass(frozen=True)
class Policy:
    """Server-wide knobs from settings."""

    # Soft-deleted rows get purge_time = delete_time + retention; None keeps them.
    retention: timedelta | None = None
    request_id_ttl: timedelta = timedelta(hours=24)
    # ESTIMATED counts stay exact while the planner expects fewer rows.
    estimate_threshold: int = 10_000


@dataclass(frozen=True)
class Page(Generic[M]):
    items: list[M]
    next_page_token: str
    total_size: int | None = None
    total_size_exact: bool = False


Work = Callable[[Repository], Awaitable[list[Row]]]
# A condition a domain search adds to a List, and the text that names it in page tokens.
Narrowing = tuple[ColumnElement[bool], str]


class StandardMethods(Generic[M]):
    def __init__(
        self,
        resource: Resource[M],
        units: Units,
        tokens: PageTokens,
        policy: Policy,
        cache: ReadThrough,
    ) -> None:
        self._r = resource
        self._units = units
        self._cache = cache
        self._table = resource.repository.entity.table.name
        cache.register(self._table, resource.mapping.message_cls)
        self._tokens = tokens
        self._policy = policy
        entity = resource.repository.entity
        # Shared with domain methods that filter the same entity (JobStatistics).
        self.filters = Filters(entity.filter_fields())
        self._sort_columns = entity.sort_columns()
        self._unique = sorted(set(entity.unique_fields.values()))
        # Single-row writes whose one statement may run in autocommit (Units.write).
        repository = resource.repository
        self._one_write = {
            "create": repository.inherits("create", "create_many"),
            "update": repository.inherits("update", "_change_one"),
            "undelete": repository.inherits("undelete", "_change_one"),
            "delete": repository.inherits("delete_many"),
        }

    # ------------------------------------------------------------ reads

    async def get(self, request: Any) -> M:
        key = validation.resource_id(request.id, "id")

        async def load() -> tuple[M, int]:
            row = await self._units.read(lambda uow: self._repo(uow).get(key))
            return self._r.mapping.to_message(row), row["version"]

        return await self._cache.get(self._table, key, load, self._r.mapping.message_cls.FromString)

    async def batch_get(self, request: Any) -> list[M]:
        validation.batch_size(len(request.ids), "ids")
        keys = [validation.resource_id(id_, f"ids[{i}]") for i, id_ in enumerate(request.ids)]
        validation.distinct(keys, "ids[{}]", "id")
        rows = await self._units.read(lambda uow: self._repo(uow).get_many(keys))
        return self._messages(rows)

    async def page(self, request: ListRequest, narrow: Narrowing | None = None) -> Page[M]:
        """AIP-132 List with AIP-158 pages, AIP-160 filter, order_by and counts. `narrow`:
        a condition a domain search adds to the filter, and the text page tokens bind it by."""
        limit = validation.page_size(request.page_size)
        if request.skip < 0:
            raise InvalidArgument.field("skip", "must not be negative")
        counting = self._count_mode(request.count_mode, default=CountMode.COUNT_MODE_NONE)
        tenant = context.tenant()
        where = self.filters.compile(request.filter)
        order = parse_order_by(request.order_by, self._sort_columns, self._default_order)
        query = "|".join(
            (self._r.name, tenant, request.filter, request.order_by, str(request.show_deleted))
        )
        if narrow is not None:
            where = narrow[0] if where is None else and_(where, narrow[0])
            query += "|" + narrow[1]
        after = self._position(order, request.page_token, query) if request.page_token else None

        async def read(uow: RepositorySource) -> tuple[list[Row], bool, int | None, bool]:
            repo = self._repo(uow)
            rows, more = await repo.page(
                limit,
                after,
                where=where,
                order=order,
                skip=request.skip,
                show_deleted=request.show_deleted,
            )
            total, exact = None, False
            if counting != CountMode.COUNT_MODE_NONE:
                total, exact = await self._count(repo, where, request.show_deleted, counting)
            return rows, more, total, exact

        rows, more, total, exact = await self._units.read(read)
        token = self._tokens.encode(position_of(order, rows[-1]), query) if more else ""
        return Page(self._messages(rows), token, total, exact)

    async def count(self, request: Any) -> tuple[int, bool]:
        """(total, exact) for a Count request: filter, show_deleted, count_mode."""
        mode = self._count_mode(request.count_mode, default=CountMode.COUNT_MODE_EXACT)
        if mode == CountMode.COUNT_MODE_NONE:
            raise InvalidArgument.field("count_mode", "must be EXACT or ESTIMATED")
        where = self.filters.compile(request.filter)
        return await self._units.read(
            lambda uow: self._count(self._repo(uow), where, request.show_deleted, mode)
        )

    # ------------------------------------------------------------ writes

    async def create(self, request: Any) -> M:
        values = self._create_values(getattr(request, self._r.name), self._r.name)
        (message,) = await self._write(
            request,
            lambda repo: self._one(repo.create(values)),
            one_write=self._one_write["create"],
        )
        return message

    async def batch_create(self, request: Any) -> list[M]:
        items = request.requests
        validation.batch_size(len(items), "requests")
        name = self._r.name
        values = [
            self._create_values(getattr(item, name), f"requests[{i}].{name}")
            for i, item in enumerate(items)
        ]
        for field in self._unique:
            keys = [_fold(each.get(field)) for each in values]
            validation.distinct(keys, f"requests[{{}}].{name}.{field}", field)
        return await self._write(request, lambda repo: repo.create_many(values))

    async def update(self, request: Any) -> M:
        key, values, version = self._update_values(request, "")
        (message,) = await self._write(
            None,
            lambda repo: self._one(repo.update(key, values, version)),
            one_write=self._one_write["update"],
        )
        return message

    async def batch_update(self, request: Any) -> list[M]:
        validation.batch_size(len(request.requests), "requests")
        updates = [
            self._update_values(item, f"requests[{i}].") for i, item in enumerate(request.requests)
        ]
        validation.distinct(
            [key for key, _, _ in updates], f"requests[{{}}].{self._r.name}.id", "id"
        )

        async def work(repo: Repository) -> list[Row]:
            # One statement per item: each has its own mask and etag.
            return [await repo.update(key, values, version) for key, values, version in updates]

        return await self._write(request, work)

    async def delete(self, request: Any) -> M:
        item = self._delete_item(request, "")
        (message,) = await self._write(
            None, lambda repo: self._delete_many(repo, [item]), one_write=self._one_write["delete"]
        )
        return message

    async def batch_delete(self, request: Any) -> list[M]:
        validation.batch_size(len(request.requests), "requests")
        items = [
            self._delete_item(item, f"requests[{i}].") for i, item in enumerate(request.requests)
        ]
        validation.distinct([key for key, _, _ in items], "requests[{}].id", "id")
        return await self._write(request, lambda repo: self._delete_many(repo, items))

    async def write_one(self, request: Message, work: Callable[[Repository], Awaitable[Row]]) -> M:
        """A domain write of one row, run as the standard writes are: in the call's
        transaction, retried on conflicts, replayed to retries with its request_id."""
        (message,) = await self._write(request, lambda repo: self._one(work(repo)))
        return message

    async def write_rows(self, request: Message, work: Work) -> list[M]:
        """As `write_one`, for work that changes any number of rows."""
        return await self._write(request, work)

    async def undelete(self, request: Any) -> M:
        key = validation.resource_id(request.id, "id")
        version = parse_etag(request.etag, "etag")
        (message,) = await self._write(
            None,
            lambda repo: self._one(repo.undelete(key, version)),
            one_write=self._one_write["undelete"],
        )
        return message

    # ------------------------------------------------------------ helpers

    @property
    def _default_order(self) -> str:
        return self._r.repository.entity.default_order

    def _repo(self, uow: RepositorySource) -> Repository:
        return uow.repository(self._r.repository)

    def _messages(self, rows: Sequence[Row]) -> list[M]:
        return [self._r.mapping.to_message(row) for row in rows]

    @staticmethod
    async def _one(row: Awaitable[Row]) -> list[Row]:
        return [await row]

    def _create_values(self, message: M, prefix: str) -> dict[str, Any]:
        mapping = self._r.mapping
        values = {
            **self._r.create_defaults,
            **mapping.to_values(message, mapping.populated(message)),
        }
        validation.require(values, self._r.required, prefix)
        validation.check_fields(values, self._r.checks, prefix)
        return values

    def _update_values(
        self, request: Any, prefix: str
    ) -> tuple[uuid.UUID, dict[str, Any], int | None]:
        mapping, name = self._r.mapping, self._r.name
        message = getattr(request, name)
        key = validation.resource_id(getattr(message, "id", ""), f"{prefix}{name}.id")
        version = parse_etag(getattr(message, "etag", ""), f"{prefix}{name}.etag")
        mask = request.update_mask if request.HasField("update_mask") else None
        values = mapping.to_values(
            message, mapping.mask_paths(message, mask, f"{prefix}update_mask")
        )
        if not values:
            raise InvalidArgument.field(f"{prefix}update_mask", "names no field to update")
        validation.check_fields(values, self._r.checks, f"{prefix}{name}")
        return key, values, version

    def _delete_item(self, request: Any, prefix: str) -> tuple[uuid.UUID, int | None, bool]:
        key = validation.resource_id(request.id, f"{prefix}id")
        return key, parse_etag(request.etag, f"{prefix}etag"), request.force

    def _delete_many(
        self, repo: Repository, items: list[tuple[uuid.UUID, int | None, bool]]
    ) -> Awaitable[list[Row]]:
        return repo.delete_many(items, retention=self._policy.retention)

    async def _write(
        self, request: Message | None, work: Work, *, one_write: bool = False
    ) -> list[M]:
        """Runs `work` in the call's transaction. With a request id on `request`, a
        retry replays the first response (AIP-155). `one_write`: `work` runs one write
        statement at most; it counts only without a request id, whose record is a write too."""
        raw_id = getattr(request, "request_id", "") if request is not None else ""
        if not raw_id:
            rows = await self._units.write(lambda uow: work(self._repo(uow)), one_write=one_write)
            return self._messages(rows)
        assert request is not None
        key = validation.request_id(raw_id)
        method, digest = request.DESCRIPTOR.full_name, _digest(request)

        async def first_or_replay(uow: RepositorySource) -> list[M] | Recorded:
            log = uow.repository(RequestLog)
            prior = await log.find(key)
            if prior is not None:
                return prior
            await log.claim(key, method, digest, self._policy.request_id_ttl)
            messages = self._messages(await work(self._repo(uow)))
            await log.complete(key, _pack(messages))
            return messages

        try:
            outcome = await self._units.write(first_or_replay)
        except AlreadyExists as exc:
            if exc.field != "request_id":
                raise
            # A concurrent call with this id committed first: answer as it did.
            prior = await self._units.read(lambda uow: uow.repository(RequestLog).find(key))
            if prior is None:
                raise Conflict("a concurrent call with this request_id failed; retry") from None
            outcome = prior
        if isinstance(outcome, Recorded):
            return self._replay(outcome, method, digest)
        return outcome

    def _replay(self, prior: Recorded, method: str, digest: str) -> list[M]:
        if (prior.method, prior.digest) != (method, digest):
            raise InvalidArgument.field(
                "request_id",
                "was already used for a different request; use a new UUID for each request",
                reason="REQUEST_ID_REUSED",
            )
        return [self._r.mapping.message_cls.FromString(raw) for raw in _unpack(prior.response)]

    def _count_mode(self, mode: int, default: int) -> int:
        if mode not in CountMode.values():
            raise InvalidArgument.field("count_mode", f"{mode} is not a count mode")
        return default if mode == CountMode.COUNT_MODE_UNSPECIFIED else mode

    async def _count(
        self, repo: Repository, where: Any, show_deleted: bool, mode: int
    ) -> tuple[int, bool]:
        if mode == CountMode.COUNT_MODE_ESTIMATED:
            estimate = await repo.estimate(where, show_deleted=show_deleted)
            if estimate is not None and estimate >= self._policy.estimate_threshold:
                return estimate, False
        return await repo.count(where, show_deleted=show_deleted), True

    def _position(self, order: Order, token: str, query: str) -> list[Any]:
        try:
            return position_from(order, self._tokens.decode(token, query))
        except (TypeError, ValueError):
            raise InvalidArgument.field(
                "page_token", "is malformed", reason="INVALID_PAGE_TOKEN"
            ) from None


def _fold(value: Any) -> Any:
    # lower(), as the unique indexes fold: casefold() would refuse what they allow.
    return value.lower() if isinstance(value, str) else value


def _digest(request: Message) -> str:
    """What makes two requests the same request: everything but the request id."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    # Batch items' own request ids are ignored, so they do not count either.
    for item in getattr(copy, "requests", ()):
        if "request_id" in item.DESCRIPTOR.fields_by_name:
            item.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def _pack(messages: Sequence[Message]) -> bytes:
    """Length-prefixed serialized messages."""
    return b"".join(
        len(raw).to_bytes(4, "big") + raw for raw in (m.SerializeToString() for m in messages)
    )


def _unpack(data: bytes) -> list[bytes]:
    items, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        items.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return items
