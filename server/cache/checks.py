"""Checks on CacheService request fields: INVALID_ARGUMENT naming the field at fault."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from repogate.v1 import cache_pb2 as pb
from repositories.errors import InvalidArgument
from server import validation
from server.cache.glob import compile_glob

MAX_KEY_BYTES = 512
MAX_PATTERN_BYTES = 1024


@dataclass(frozen=True)
class Limits:
    max_value_bytes: int = 1024 * 1024
    # Seconds; also the TTL of a key written without one.
    max_ttl: int = 86_400


def key(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument.field(field, "is required")
    if len(value.encode()) > MAX_KEY_BYTES:
        raise InvalidArgument.field(field, f"must be at most {MAX_KEY_BYTES} bytes of UTF-8")
    if not value.isprintable():
        raise InvalidArgument.field(field, "must be printable, without control characters")
    return value


def keys(values: Sequence[str], field: str) -> list[str]:
    """1-1000 distinct valid keys; a fault names the item, e.g. `keys[3]`."""
    validation.batch_size(len(values), field)
    checked = [key(value, f"{field}[{i}]") for i, value in enumerate(values)]
    validation.distinct(checked, f"{field}[{{}}]", "key")
    return checked


def value(data: bytes, field: str, limits: Limits) -> bytes:
    if len(data) > limits.max_value_bytes:
        raise InvalidArgument.field(field, f"must be at most {limits.max_value_bytes} bytes")
    return data


def entries(items: Sequence[pb.CacheEntry], field: str, limits: Limits) -> list[tuple[str, bytes]]:
    """1-1000 entries with distinct valid keys, e.g. `entries[3].key` at fault."""
    validation.batch_size(len(items), field)
    checked = [
        (key(item.key, f"{field}[{i}].key"), value(item.value, f"{field}[{i}].value", limits))
        for i, item in enumerate(items)
    ]
    validation.distinct([k for k, _ in checked], f"{field}[{{}}].key", "key")
    return checked


def ttl(request: Message, field: str, limits: Limits, *, required: bool = False) -> float:
    """Seconds from the Duration `field` of `request`, at most `limits.max_ttl`.

    Unset or zero means `max_ttl`, unless `required`: then unset is INVALID_ARGUMENT
    and zero is zero.
    """
    if not request.HasField(field):
        if required:
            raise InvalidArgument.field(field, "is required")
        return float(limits.max_ttl)
    seconds = validation.duration(getattr(request, field), field)
    if seconds < 0:
        raise InvalidArgument.field(field, "must not be negative")
    if seconds > limits.max_ttl:
        raise InvalidArgument.field(field, f"must be at most {limits.max_ttl} seconds")
    return seconds or (0.0 if required else float(limits.max_ttl))


def pattern(text: str, field: str, *, required: bool) -> str:
    """A client glob; when not `required`, empty means `*`."""
    if not text:
        if required:
            raise InvalidArgument.field(field, "is required; `*` matches every key")
        return "*"
    if len(text.encode()) > MAX_PATTERN_BYTES:
        raise InvalidArgument.field(field, f"must be at most {MAX_PATTERN_BYTES} bytes of UTF-8")
    if not text.isprintable():
        raise InvalidArgument.field(field, "must be printable, without control characters")
    problems = compile_glob(text).problems
    if problems:
        raise InvalidArgument.field(field, problems[0])
    return text
