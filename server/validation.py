"""Checks on request fields that raise INVALID_ARGUMENT with field violations."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from repositories.errors import FieldViolation, InvalidArgument

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
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument.field(field, "must be a UUID") from None


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
    """An AIP-155 request id: a UUID, in any of the forms uuid.UUID reads."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument.field("request_id", "must be a UUID") from None


def distinct(keys: list[Any], field: str, what: str) -> None:
    """Rejects a batch naming one thing twice; `field` has `{}` for the index."""
    seen: dict[Any, int] = {}
    for index, key in enumerate(keys):
        if key in seen:
            raise InvalidArgument.field(
                field.format(index), f"repeats the {what} of item {seen[key]}"
            )
        seen[key] = index
