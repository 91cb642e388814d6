"""Rows to protobuf messages and back, derived once per message type."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from repositories.errors import InvalidArgument

M = TypeVar("M", bound=Message)
Row = Mapping[Any, Any]
Reader = Callable[[Row], Any]

# Fields every resource has that are not plain columns.
ETAG = "etag"
# The largest row version (and so etag) there can be: `version` is a 32-bit INTEGER.
MAX_VERSION = 2**31 - 1
_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _reader(field: Any) -> Reader:
    """How to read `field` (a protobuf FieldDescriptor) from a row."""
    name = field.name
    if name == ETAG:
        return lambda row: str(row["version"])
    if name == "id":
        return lambda row: str(row["id"])
    if (
        field.message_type is not None
        and field.message_type.full_name == "google.protobuf.Timestamp"
    ):
        return lambda row: None if row[name] is None else _timestamp(row[name])
    return lambda row: row[name]


class MessageMapping(Generic[M]):
    """Maps one resource message to and from rows of its table.

    Args:
        message_cls: The generated resource class (User).
        updatable: Fields a client may write; the rest are output only.
    """

    def __init__(self, message_cls: type[M], updatable: Collection[str]) -> None:
        self.message_cls = message_cls
        fields = message_cls.DESCRIPTOR.fields
        self.updatable = frozenset(updatable)
        unknown = self.updatable - {f.name for f in fields}
        if unknown:
            raise ValueError(f"{message_cls.__name__} has no fields {sorted(unknown)}")
        self._readers = [(f.name, _reader(f)) for f in fields]

    def to_message(self, row: Row) -> M:
        values = {}
        for name, read in self._readers:
            value = read(row)
            if value is not None:
                values[name] = value
        return self.message_cls(**values)

    def to_values(self, message: M, paths: Collection[str]) -> dict[str, Any]:
        return {path: getattr(message, path) for path in paths}

    def populated(self, message: M) -> list[str]:
        """Writable fields the client set (non-default, or present for `optional`)."""
        return [f.name for f, _ in message.ListFields() if f.name in self.updatable]

    def mask_paths(
        self, message: M, mask: field_mask_pb2.FieldMask | None, field: str = "update_mask"
    ) -> list[str]:
        """AIP-134: the mask's paths, `*` for all, or the populated fields when absent."""
        if mask is None or not mask.paths:
            return self.populated(message)
        if list(mask.paths) == ["*"]:
            return sorted(self.updatable)
        paths = []
        for path in mask.paths:
            if path not in self.updatable:
                allowed = ", ".join(sorted(self.updatable))
                raise InvalidArgument.field(
                    field,
                    f"{path!r} is not an updatable field (updatable: {allowed}, or *)",
                )
            paths.append(path)
        return paths


def parse_etag(etag: str, field: str) -> int | None:
    """The row version an etag stands for; None when the client sent none."""
    if not etag:
        return None
    # isdigit() alone admits non-ASCII digits ("²", Arabic-Indic); versions are 32-bit INTEGER.
    if len(etag) > 10 or not (etag.isascii() and etag.isdigit()) or int(etag) > MAX_VERSION:
        raise InvalidArgument.field(field, "is not an etag this server issued")
    return int(etag)
