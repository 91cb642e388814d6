"""Standard methods (AIP-131..135, 154, 155, 157, 158, 160, 164, 231..235) for any
resource, shared by every servicer.

A servicer declares its resource once (repository, mapping, field checks) and
each RPC becomes a line calling into this class with the request message.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic

from google.protobuf.message import Message
from sqlalchemy import and_

from repogate.v1 import query_pb2
from repositories.base import Repository, Row
from repositories.database import RepositorySource
from repositories.errors import InvalidArgument
from repositories.filtering import Filters
from repositories.ordering import Order, parse_order_by, position_from, position_of
from server import context, read_masks, request_ids, updates, validation
from server.aggregates import Aggregates
from server.answers import Answers, Encoded, R
from server.expansion import Expander
from server.mapping import M, parse_etag
from server.page_tokens import PageTokens
from server.read_through import ReadThrough
from server.resource_types import ListRequest, Narrowing, Page, Policy, Resource
from server.units import Units

CountMode = query_pb2.CountMode


Work = Callable[[Repository], Awaitable[list[Row]]]
# How a write's rows become its answer: the one message, or a response holding them.
Shape = type[Message] | None


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
        self._answers = Answers(policy.max_message_bytes)
        self._expander = Expander(resource.name, resource.related, resource.mapping.to_message)
        entity = resource.repository.entity
        # Shared with domain methods that filter the same entity (JobStatistics).
        self.filters = Filters(entity.filter_fields())
        # The shapes of List, Count, Aggregate and Rank queries, for AdminService.RecommendIndexes.
        name = resource.mapping.message_cls.DESCRIPTOR.full_name
        self.shapes = units.shapes.entity(name, resource.repository, self.filters)
        self._sort_columns = entity.sort_columns()
        self._aggregates = Aggregates(
            resource.name,
            resource.repository,
            self.filters,
            self._sort_columns,
            units,
            tokens,
            self.shapes,
            timeout=policy.aggregate_timeout,
            max_groups=policy.aggregate_max_groups,
        )
        self._unique = sorted(set(entity.unique_fields.values()))
        # Single-row writes whose one statement may run in autocommit (Units.write): it
        # commits as it runs, so only where every row's answer is known to fit.
        repository = resource.repository
        fits = self._answers.always_fit(entity.table)
        self._one_write = {
            "create": fits and repository.inherits("create", "create_many"),
            "update": fits and repository.inherits("update", "_change_one"),
            "undelete": fits and repository.inherits("undelete", "_change_one"),
            "delete": fits and repository.inherits("delete_many"),
        }

    # ------------------------------------------------------------ reads

    async def get(self, request: Any) -> M:
        key = validation.resource_id(request.id, "id")
        mask = read_masks.of(request, self._r.mapping.message_cls)
        expand = self._expander.names(request)
        if expand:
            # Past the cache: one read of the row and its related rows, all as of one
            # snapshot; a cached row says nothing of its children (docs/schema.md).
            async def expanded(uow: RepositorySource) -> list[M]:
                row = await self._repo(uow).get(key)
                return await self._expander.messages(uow, [row], expand)

            (message,) = await self._units.read(expanded)
            return message if mask is None else mask.apply(message)

        async def load() -> tuple[M, int]:
            row = await self._units.read(lambda uow: self._repo(uow).get(key))
            return self._r.mapping.to_message(row), row["version"]

        # The cache holds whole messages: the mask applies to what it gives.
        message = await self._cache.get(
            self._table, key, load, self._r.mapping.message_cls.FromString
        )
        return message if mask is None else mask.apply(message)

    async def batch_get(self, request: Any) -> list[M]:
        validation.batch_size(len(request.ids), "ids")
        keys = [validation.resource_id(id_, f"ids[{i}]") for i, id_ in enumerate(request.ids)]
        validation.distinct(keys, "ids[{}]", "id")
        mask = read_masks.of(request, self._r.mapping.message_cls)
        expand = self._expander.names(request)
        self._expander.check_batch(len(keys), expand)
        # With a mask alone, rows hold only the columns it needs; expanding reads whole rows.
        partial = mask if not expand else None
        columns = partial.columns(self._r.repository.entity.table) if partial else ()

        async def read(uow: RepositorySource) -> list[M]:
            rows = await self._repo(uow).get_many(keys, columns=columns)
            return await self._to_messages(uow, rows, mask, expand)

        return await self._units.read(read)

    async def page(self, request: ListRequest, narrow: Narrowing | None = None) -> Page[M]:
        """AIP-132 List with AIP-158 pages, AIP-160 filter, order_by and counts. `narrow`:
        a condition a domain search adds to the filter, and the text page tokens bind it by."""
        expand = self._expander.names(request)
        limit = self._expander.page_size(validation.page_size(request.page_size), expand)
        if request.skip < 0:
            raise InvalidArgument.field("skip", "must not be negative")
        counting = self._count_mode(request.count_mode, default=CountMode.COUNT_MODE_NONE)
        mask = read_masks.of(request, self._r.mapping.message_cls)
        tenant = context.tenant()
        where = self.filters.compile(request.filter)
        order = parse_order_by(request.order_by, self._sort_columns, self._default_order)
        partial = mask if not expand else None  # as in batch_get
        columns = partial.columns(self._r.repository.entity.table, order) if partial else ()
        query = "|".join(
            (self._r.name, tenant, request.filter, request.order_by, str(request.show_deleted))
        )
        if narrow is not None:
            where = narrow[0] if where is None else and_(where, narrow[0])
            query += "|" + narrow[1]
        after = self._position(order, request.page_token, query) if request.page_token else None
        self.shapes.record("List", request.filter, request.order_by)

        async def read(
            uow: RepositorySource,
        ) -> tuple[list[Row], list[M], bool, int | None, bool]:
            repo = self._repo(uow)
            rows, more = await repo.page(
                limit,
                after,
                where=where,
                order=order,
                skip=request.skip,
                show_deleted=request.show_deleted,
                columns=columns,
            )
            total, exact = None, False
            if counting != CountMode.COUNT_MODE_NONE:
                total, exact = await self._count(repo, where, request.show_deleted, counting)
            items = await self._to_messages(uow, rows, mask, expand)
            return rows, items, more, total, exact

        rows, items, more, total, exact = await self._units.read(read)
        token = self._tokens.encode(position_of(order, rows[-1]), query) if more else ""
        return Page(items, token, total, exact)

    async def count(self, request: Any) -> tuple[int, bool]:
        """(total, exact) for a Count request: filter, show_deleted, count_mode."""
        mode = self._count_mode(request.count_mode, default=CountMode.COUNT_MODE_EXACT)
        if mode == CountMode.COUNT_MODE_NONE:
            raise InvalidArgument.field("count_mode", "must be EXACT or ESTIMATED")
        where = self.filters.compile(request.filter)
        self.shapes.record("Count", request.filter)
        return await self._units.read(
            lambda uow: self._count(self._repo(uow), where, request.show_deleted, mode)
        )

    async def aggregate(self, request: Any, response: type[R]) -> R:
        """Aggregate<Rs>: one page of groups (server/aggregates.py)."""
        return await self._aggregates.groups(request, response)

    async def rank(self, request: Any) -> tuple[int, int]:
        """Rank<R>: (rank, total) of the row `request.id` (server/aggregates.py)."""
        return await self._aggregates.rank(request, self._default_order)

    # ------------------------------------------------------------ writes

    async def create(self, request: Any) -> Encoded[M]:
        values = self._create_values(getattr(request, self._r.name), self._r.name)
        return await self._write(
            request,
            lambda repo: self._one(repo.create(values)),
            one_write=self._one_write["create"],
        )

    async def batch_create(self, request: Any, response: type[R]) -> Encoded[R]:
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
        return await self._write(request, lambda repo: repo.create_many(values), response)

    async def update(self, request: Any) -> Encoded[M]:
        """AIP-134, with update_mask paths into Struct fields and allow_missing
        (server/updates.py)."""
        change = updates.change(self._r, request, "", self._create_values)
        return await self._write(
            None,
            lambda repo: self._one(updates.write(repo, change)),
            one_write=self._one_write["update"] and change.one_statement,
        )

    async def batch_update(self, request: Any, response: type[R]) -> Encoded[R]:
        validation.batch_size(len(request.requests), "requests")
        changes = [
            updates.change(self._r, item, f"requests[{i}].", self._create_values)
            for i, item in enumerate(request.requests)
        ]
        validation.distinct(
            [change.key for change in changes], f"requests[{{}}].{self._r.name}.id", "id"
        )

        async def work(repo: Repository) -> list[Row]:
            # One write per item: each has its own mask and etag.
            return [await updates.write(repo, change) for change in changes]

        return await self._write(request, work, response)

    async def delete(self, request: Any) -> Encoded[M]:
        item = self._delete_item(request, "")
        return await self._write(
            None, lambda repo: self._delete_many(repo, [item]), one_write=self._one_write["delete"]
        )

    async def batch_delete(self, request: Any, response: type[R]) -> Encoded[R]:
        validation.batch_size(len(request.requests), "requests")
        items = [
            self._delete_item(item, f"requests[{i}].") for i, item in enumerate(request.requests)
        ]
        validation.distinct([key for key, _, _ in items], "requests[{}].id", "id")
        return await self._write(request, lambda repo: self._delete_many(repo, items), response)

    async def write_one(
        self, request: Message, work: Callable[[Repository], Awaitable[Row]]
    ) -> Encoded[M]:
        """A domain write of one row, run as the standard writes are: in the call's
        transaction, retried on conflicts, replayed to retries with its request_id."""
        return await self._write(request, lambda repo: self._one(work(repo)))

    async def write_rows(self, request: Message, work: Work, response: type[R]) -> Encoded[R]:
        """As `write_one`, for work that changes any number of rows: the answer is a
        `response` whose one field holds them."""
        return await self._write(request, work, response)

    def create_values(self, message: M, prefix: str) -> dict[str, Any]:
        """The values a Create of `message` writes, checked as Create checks them (rules,
        required fields, field checks; errors name fields under `prefix`): for extensions."""
        return self._create_values(message, prefix)

    def update_values(self, request: Any) -> tuple[uuid.UUID, dict[str, Any], int | None]:
        """(id, values, expected version) of an Update request (the resource and its
        `update_mask`), checked as Update checks them: for extensions. Paths into Struct
        fields need the stored row (`updates.write` runs them), and `allow_missing` a write
        that may create it: both refused here."""
        change = updates.change(self._r, request, "", self._create_values)
        if change.edits:
            raise InvalidArgument.field(
                "update_mask", "paths into Struct fields are not supported by this method"
            )
        if change.create is not None:
            raise InvalidArgument.field("allow_missing", "is not supported by this method")
        return change.key, change.values, change.version

    async def undelete(self, request: Any) -> Encoded[M]:
        key = validation.resource_id(request.id, "id")
        version = parse_etag(request.etag, "etag")
        return await self._write(
            None,
            lambda repo: self._one(repo.undelete(key, version)),
            one_write=self._one_write["undelete"],
        )

    # ------------------------------------------------------------ helpers

    @property
    def _default_order(self) -> str:
        return self._r.repository.entity.default_order

    def _repo(self, uow: RepositorySource) -> Repository:
        return uow.repository(self._r.repository)

    async def _to_messages(
        self,
        uow: RepositorySource,
        rows: Sequence[Row],
        mask: read_masks.ReadMask | None,
        expand: Sequence[str],
    ) -> list[M]:
        """`rows` as the answer's messages: with the related fields `expand` names, then
        masked. Without `expand`, a mask's rows hold only the columns it asked for."""
        if mask is not None and not expand:
            return mask.messages(rows, self._r.mapping)
        messages = await self._expander.messages(uow, rows, expand)
        return messages if mask is None else list(map(mask.apply, messages))

    @staticmethod
    async def _one(row: Awaitable[Row]) -> list[Row]:
        return [await row]

    def _create_values(self, message: M, prefix: str) -> dict[str, Any]:
        mapping = self._r.mapping
        if self._r.rules is not None:
            self._r.rules(message, None, prefix)
        values = {
            **self._r.create_defaults,
            **mapping.to_values(message, mapping.populated(message)),
        }
        validation.require(values, self._r.required, prefix)
        validation.check_fields(values, self._r.checks, prefix)
        return values

    def _delete_item(self, request: Any, prefix: str) -> tuple[uuid.UUID, int | None, bool]:
        key = validation.resource_id(request.id, f"{prefix}id")
        return key, parse_etag(request.etag, f"{prefix}etag"), request.force

    def _delete_many(
        self, repo: Repository, items: list[tuple[uuid.UUID, int | None, bool]]
    ) -> Awaitable[list[Row]]:
        return repo.delete_many(items, retention=self._policy.retention)

    async def _write(
        self, request: Message | None, work: Work, shape: Shape = None, *, one_write: bool = False
    ) -> Encoded[Any]:
        """Runs `work` in the call's transaction and answers with its rows (`shape`: None
        for the one row's message, else a response holding them). The answer is built
        before the unit commits, so one gRPC could not send writes nothing. With a request
        id on `request`, a retry replays the first answer (AIP-155). `one_write`: `work` runs
        one write statement at most; it counts only without a request id, whose record is
        a write too."""

        async def items(uow: RepositorySource) -> list[bytes]:
            to_message = self._r.mapping.to_message
            return [to_message(row).SerializeToString() for row in await work(self._repo(uow))]

        def answer(items: list[bytes]) -> Encoded[Any]:
            if shape is None:
                (item,) = items
                return self._answers.one(item)
            return self._answers.holding(items, shape)

        raw_id = getattr(request, "request_id", "") if request is not None else ""
        if raw_id:
            assert request is not None
            keep = self._policy.request_id_ttl
            return await request_ids.write_once(self._units, request, raw_id, keep, items, answer)

        async def answered(uow: RepositorySource) -> Encoded[Any]:
            return answer(await items(uow))

        return await self._units.write(answered, one_write=one_write)

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
