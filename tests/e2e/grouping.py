"""Helpers for the Aggregate<Rs> and Rank<R> end-to-end tests: requests built as a client
writes them, answers read back as plain data, and the values they are checked against,
computed in Python from the rows the test created."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from repogate.v1 import aggregate_pb2
from tests.e2e.domain import plain

Function = aggregate_pb2.Aggregation.Function
FUNCTIONS = {
    "count": Function.FUNCTION_COUNT,
    "sum": Function.FUNCTION_SUM,
    "avg": Function.FUNCTION_AVG,
    "min": Function.FUNCTION_MIN,
    "max": Function.FUNCTION_MAX,
    "count_distinct": Function.FUNCTION_COUNT_DISTINCT,
}
Group = tuple[dict[str, Any], dict[str, Any]]


def agg(function: str, field: str = "", alias: str = "") -> aggregate_pb2.Aggregation:
    return aggregate_pb2.Aggregation(function=FUNCTIONS[function], field=field, alias=alias)


def groups_of(page: Any) -> list[Group]:
    """A page's groups as (key, values), numbers as floats (as Struct holds them)."""
    return [(plain(group.key), plain(group.values)) for group in page.groups]


async def every_group(call: Callable[..., Awaitable[Any]], **request: Any) -> list[list[Group]]:
    """Every page of an Aggregate call (`call(page_token=..., **request)`), first to last."""
    pages, token = [], ""
    while True:
        page = await call(page_token=token, **request)
        pages.append(groups_of(page))
        token = page.next_page_token
        if not token:
            return pages


def tag(value: Any) -> tuple[str, Any]:
    """A JSON value with its kind, so that true and 1 stay two keys as they do in JSON."""
    if value is None or isinstance(value, bool | str):
        return type(value).__name__, value
    if isinstance(value, int | float):
        return "number", float(value)
    return "NoneType", None  # objects and arrays group under null


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def bucket(moment: datetime | None, unit: str) -> str | None:
    """The start of `moment`'s hour, day, ISO week, month or year, in UTC."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    start = {
        "hour": moment.replace(minute=0, second=0, microsecond=0),
        "day": day,
        "week": day - timedelta(days=day.weekday()),
        "month": day.replace(day=1),
        "year": day.replace(month=1, day=1),
    }[unit]
    return rfc3339(start)
