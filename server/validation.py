"""Checks on request fields that raise INVALID_ARGUMENT with field violations."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from repositories import ids
from repositories.errors import FieldViolation, InvalidArgument
from repositories.ids import parse_uuid

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

# Deliberately plain: one @, no spaces, a dot in the domain. Deliverability is
# the client's business; this only rejects what is certainly not an address.
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

Check = Callable[[Any], str | None]


def resource_id(value: str, field: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument.field(field, "is required")
    try:
        return parse_uuid(value)
    except ValueError:
        raise InvalidArgument.field(field, ids.problem(value)) from None


def page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def email(value: str) -> str | None:
    if not value:
        return "is required"
    if len(value) > 254 or not _EMAIL_RE.fullmatch(value):
        return "must be an email address of at most 254 characters"
    return None


def username(value: str) -> str | None:
    if not value:
        return "is required"
    if not _USERNAME_RE.fullmatch(value):
        return (
            "must be 1-64 characters from A-Z, a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return None


def max_length(limit: int) -> Check:
    def check(value: str) -> str | None:
        return f"must be at most {limit} characters" if len(value) > limit else None

    return check


def check_fields(values: Mapping[str, Any], checks: Mapping[str, Check], prefix: str) -> None:
    """Runs the checks for the fields present in `values`; reports every failure at once."""
    violations = []
    for name, value in values.items():
        check = checks.get(name)
        if isinstance(value, str) and "\x00" in value:
            # PostgreSQL cannot store NUL in text and SQLite can: reject it on both.
            problem: str | None = "must not contain NUL characters"
        else:
            problem = check(value) if check else None
        if problem:
            violations.append(FieldViolation(f"{prefix}.{name}", problem))
    if violations:
        summary = "; ".join(f"{v.field} {v.description}" for v in violations)
        raise InvalidArgument(f"invalid request: {summary}", violations)


def require(values: Mapping[str, Any], required: frozenset[str], prefix: str) -> None:
    missing = sorted(name for name in required if not values.get(name))
    if missing:
        fields = [f"{prefix}.{name}" for name in missing]
        raise InvalidArgument(
            f"missing required fields: {', '.join(fields)}",
            [FieldViolation(field, "is required") for field in fields],
        )


MAX_BATCH = 1000


def batch_size(count: int, field: str) -> None:
    if count == 0:
        raise InvalidArgument.field(field, "must not be empty")
    if count > MAX_BATCH:
        raise InvalidArgument.field(field, f"holds {count} items; at most {MAX_BATCH} are allowed")


def request_id(value: str) -> uuid.UUID:
    """An AIP-155 request id: a UUID, written as every id is."""
    return resource_id(value, "request_id")


def distinct(keys: list[Any], field: str, what: str) -> None:
    """Rejects a batch naming one thing twice; `field` has `{}` for the index."""
    seen: dict[Any, int] = {}
    for index, key in enumerate(keys):
        if key in seen:
            raise InvalidArgument.field(
                field.format(index), f"repeats the {what} of item {seen[key]}"
            )
        seen[key] = index


# ---------------------------------------------------------------- checks for more kinds

_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")
_DECIMAL_RE = re.compile(r"[0-9]{1,10}(\.[0-9]{1,9})?")
# How deep a stored JSON document may nest: as deep as every request and response that
# carries one can hold. protobuf parses at most 100 nested messages, each JSON object
# level costs three (Struct, map entry, Value), and the deepest request holds the
# Struct three levels down (BatchCreateSessionsRequest.requests.session.preferences):
# 3 + 3 * 32 = 99 fits, a 33rd level does not.
MAX_JSON_DEPTH = 32


def uuid_text(value: Any) -> str | None:
    """For reference fields the mapping turned into UUIDs: what is still text was none."""
    if isinstance(value, uuid.UUID):
        return None
    return "is required" if not value else ids.problem(str(value))


def token(limit: int) -> Check:
    """Names such as job and message types: 1 to `limit` characters from A-Z a-z 0-9 . _ : / -,
    starting with a letter or digit."""

    def check(value: str) -> str | None:
        if not value:
            return "is required"
        if len(value) > limit or not _TOKEN_RE.fullmatch(value):
            return (
                f"must be 1-{limit} characters from A-Z, a-z, 0-9, '.', '_', ':', '/', '-', "
                "starting with a letter or digit"
            )
        return None

    return check


def printable(limit: int) -> Check:
    """Required text of 1 to `limit` characters, none of them control characters."""

    def check(value: str) -> str | None:
        if not value:
            return "is required"
        if len(value) > limit:
            return f"must be at most {limit} characters"
        return None if value.isprintable() else "must not contain control characters"

    return check


def one_of(names: Collection[str]) -> Check:
    """For enum fields, as the mapping stores them: None is UNSPECIFIED."""

    def check(value: Any) -> str | None:
        if value is None:
            return "must be set"
        return None if value in names else f"must be one of {', '.join(names)}"

    return check


def json_document(value: Any) -> str | None:
    """JSON both databases store: finite numbers, no NUL (PostgreSQL refuses it), bounded
    nesting."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"must not nest deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, float) and not math.isfinite(item):
            return "must not hold NaN or infinite numbers"
        if isinstance(item, str) and "\x00" in item:
            return "must not contain NUL characters"
        if isinstance(item, dict):
            if any("\x00" in key for key in item):
                return "must not contain NUL characters"
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return None


def amount(value: str, field: str) -> Decimal:
    """A non-negative decimal amount as text: up to 10 digits, then up to 9 after the point."""
    if not _DECIMAL_RE.fullmatch(value):
        raise InvalidArgument.field(
            field, "must be a decimal such as 0.0125: up to 10 digits, up to 9 after the point"
        )
    return Decimal(value)


def count(value: int, field: str, limit: int = 2**48) -> int:
    """An amount to add: from 0 to `limit`."""
    if not 0 <= value <= limit:
        raise InvalidArgument.field(field, f"must be from 0 to {limit}")
    return value


# google.protobuf.Duration: seconds within about 10,000 years either way, nanos within a
# second either way and of the seconds' sign.
_DURATION_SECONDS = 315_576_000_000
_DURATION_NANOS = 999_999_999


def duration(value: duration_pb2.Duration, field: str) -> float:
    """The seconds of a Duration that keeps google.protobuf.Duration's rules; else
    INVALID_ARGUMENT naming `field`."""
    seconds, nanos = value.seconds, value.nanos
    if (
        abs(seconds) > _DURATION_SECONDS
        or abs(nanos) > _DURATION_NANOS
        or (seconds < 0 < nanos)
        or (nanos < 0 < seconds)
    ):
        raise InvalidArgument.field(
            field,
            "is not a valid google.protobuf.Duration: seconds within ±315576000000, "
            "nanos within ±999999999 and of the same sign",
        )
    return seconds + nanos / 1e9


def moment(value: Any) -> str | None:
    """For Timestamp fields the mapping turned into datetimes: what is not one was out of
    google.protobuf.Timestamp's range."""
    return None if value is None or isinstance(value, datetime) else "is not a valid timestamp"


def timestamp(value: timestamp_pb2.Timestamp, field: str, *, not_after: datetime) -> datetime:
    """A required timestamp no later than `not_after`."""
    if value.seconds == 0 and value.nanos == 0:
        raise InvalidArgument.field(field, "is required")
    try:
        moment = value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.field(field, "is not a valid timestamp") from None
    if moment > not_after:
        raise InvalidArgument.field(field, "must not be in the future")
    return moment


def valid(value: Any, check: Check, field: str) -> Any:
    """`value` if `check` passes it, else INVALID_ARGUMENT naming `field`."""
    problem = (
        "must not contain NUL characters"
        if isinstance(value, str) and "\x00" in value
        else check(value)
    )
    if problem:
        raise InvalidArgument.field(field, problem)
    return value


def search_document(value: dict[str, Any], field: str, *, depth: int = 8, size: int = 64) -> None:
    """A JSON object to search by: small enough that the query it becomes stays small."""
    valid(value, json_document, field)
    count, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        count += 1
        if level > depth:
            raise InvalidArgument.field(field, f"must not nest deeper than {depth} levels")
        if count > size + 1:
            raise InvalidArgument.field(field, f"must hold at most {size} values")
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
