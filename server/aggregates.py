"""Aggregate<Rs> and Rank<R> of any resource (docs/aggregation.md), for StandardMethods.

Both read through the call's unit of work (or transaction) like List does, with the
resource's filter, and within the aggregate time bound: REPOGATE_AGGREGATE_TIMEOUT, or
the call's deadline when that comes first. Groups are paged by offset, carried in a
signed page token bound to the query; no page reaches past the first
REPOGATE_AGGREGATE_MAX_GROUPS groups.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from google.protobuf import struct_pb2
from google.protobuf.message import Message
from sqlalchemy import ColumnElement

from repogate.v1 import aggregate_pb2
from repositories import aggregation, ranking
from repositories.base import Repository
from repositories.database import RepositorySource
from repositories.errors import DeadlineExceeded, InvalidArgument
from repositories.filtering import Filters
from repositories.ordering import parse_order_by
from repositories.time_bound import OutOfTime
from server import context, validation
from server.page_tokens import PageTokens
from server.query_shapes import EntityShapes
from server.units import Units

T = TypeVar("T")
R = TypeVar("R", bound=Message)
Function = aggregate_pb2.Aggregation.Function
# Function number -> the name repositories.aggregation knows it by ("sum").
_FUNCTIONS = {
    number: Function.Name(number).removeprefix("FUNCTION_").lower()
    for number in Function.values()
    if number != Function.FUNCTION_UNSPECIFIED
}


class Aggregates:
    """Aggregate and Rank over one resource."""

    def __init__(
        self,
        name: str,
        repository: type[Repository],
        filters: Filters,
        sortable: Mapping[str, ColumnElement[Any]],
        units: Units,
        tokens: PageTokens,
        shapes: EntityShapes,
        *,
        timeout: float | None,
        max_groups: int,
    ) -> None:
        self._name = name
        # The filters the calls use, for AdminService.RecommendIndexes.
        self._shapes = shapes
        self._repository = repository
        self._filters = filters
        self._sortable = sortable
        self._units = units
        self._tokens = tokens
        self._timeout = timeout
        self._max_groups = max_groups

    async def groups(self, request: Any, response: type[R]) -> R:
        """One page of an Aggregate<Rs> request's groups, as its `response` message."""
        limit = validation.page_size(getattr(request, "page_size", 0))
        group_by = [str(path) for path in request.group_by]
        asked = [_aggregation(i, each) for i, each in enumerate(request.aggregations)]
        text = getattr(request, "filter", "")
        order_by = getattr(request, "order_by", "")
        show_deleted = bool(getattr(request, "show_deleted", False))
        plan = aggregation.plan(self._filters.fields, group_by, asked, order_by)
        where = self._filters.compile(text)
        self._shapes.record("Aggregate", text)
        query = json.dumps(
            [
                self._name,
                context.tenant(),
                text,
                group_by,
                [[a.function, a.field, a.alias] for a in asked],
                order_by,
                show_deleted,
            ]
        )
        token = getattr(request, "page_token", "")
        offset = self._offset(token, query) if token else 0
        if offset >= self._max_groups:
            raise InvalidArgument.field(
                "page_token",
                f"the groups after the first {self._max_groups} are not served "
                "(REPOGATE_AGGREGATE_MAX_GROUPS): narrow the filter or group by coarser keys",
                reason="TOO_MANY_GROUPS",
            )
        take = min(limit, self._max_groups - offset)

        def read(
            uow: RepositorySource, deadline: float | None
        ) -> Awaitable[list[tuple[dict[str, Any], dict[str, Any]]]]:
            repo = uow.repository(self._repository)
            return aggregation.run(
                repo,
                plan,
                where,
                show_deleted=show_deleted,
                offset=offset,
                limit=take + 1,
                deadline=deadline,
            )

        rows = await self._bounded(read)
        following = self._tokens.encode([offset + take], query) if len(rows) > take else ""
        answer: Any = response()
        for key, values in rows[:take]:
            answer.groups.add(key=_struct(key), values=_struct(values))
        answer.next_page_token = following
        return cast(R, answer)

    async def rank(self, request: Any, default_order: str) -> tuple[int, int]:
        """(rank, total) for a Rank<R> request: see repositories.ranking."""
        key = validation.resource_id(request.id, "id")
        order = parse_order_by(getattr(request, "order_by", ""), self._sortable, default_order)
        text = getattr(request, "filter", "")
        where = self._filters.compile(text)
        self._shapes.record("Rank", text)
        return await self._bounded(
            lambda uow, deadline: ranking.rank(
                uow.repository(self._repository), key, order, where, deadline
            )
        )

    async def _bounded(self, work: Callable[[RepositorySource, float | None], Awaitable[T]]) -> T:
        """Runs `work` as a read, its statements stopped REPOGATE_AGGREGATE_TIMEOUT after
        the call began (the event loop's clock): `work` is handed that deadline."""
        if self._timeout is None:
            return await self._units.read(lambda uow: work(uow, None))
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            return await self._units.read(lambda uow: work(uow, deadline))
        except OutOfTime:
            raise DeadlineExceeded(
                f"the aggregate took longer than {self._timeout:g}s "
                "(REPOGATE_AGGREGATE_TIMEOUT) and was cancelled"
            ) from None

    def _offset(self, token: str, query: str) -> int:
        position = self._tokens.decode(token, query)
        if len(position) != 1 or type(position[0]) is not int or position[0] < 0:
            raise InvalidArgument.field("page_token", "is malformed", reason="INVALID_PAGE_TOKEN")
        return position[0]


def _aggregation(i: int, message: Any) -> aggregation.Aggregation:
    function = _FUNCTIONS.get(message.function)
    if function is None:
        names = ", ".join(Function.Name(number) for number in _FUNCTIONS)
        raise InvalidArgument.field(
            f"aggregations[{i}].function",
            f"is required: one of {names}",
            reason="INVALID_AGGREGATION",
        )
    return aggregation.Aggregation(function, message.field, message.alias)


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update({name: aggregation.json_value(value) for name, value in values.items()})
    return struct
