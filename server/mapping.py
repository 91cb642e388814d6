"""Rows to protobuf messages and back, derived once per message type."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar

from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message

from repositories.errors import InvalidArgument
from repositories.ids import parse_uuid

M = TypeVar("M", bound=Message)
Row = Mapping[Any, Any]
Reader = Callable[[Row], Any]
Writer = Callable[[Any], Any]

# Fields every resource has that are not plain columns.
ETAG = "etag"
# The largest row version (and so etag) there can be: `version` is a 32-bit INTEGER.
MAX_VERSION = 2**31 - 1
_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
_STRUCT = struct_pb2.Struct.DESCRIPTOR.full_name
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Integral JSON numbers up to this size are stored as integers (Struct holds doubles).
_EXACT_INTEGERS = 2**53


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """`value` (naive: UTC) as a Timestamp. The same as Timestamp.FromDatetime, at a
    third of its cost."""
    return timestamp_pb2.Timestamp(**_timestamp_fields(value))


def _timestamp_fields(value: datetime) -> dict[str, int]:
    """A Timestamp's fields for `value`: a message constructor takes them as a dict
    for a Timestamp field, cheaper than a Timestamp built and then copied."""
    since = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _EPOCH
    return {"seconds": since.days * 86_400 + since.seconds, "nanos": since.microseconds * 1000}


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromTimedelta(timedelta(seconds=seconds))
    return value


def _struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def _plain(value: Any) -> Any:
    """A column value as a proto scalar: UUIDs and exact decimals become text."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return value


def stored_enum_names(enum: EnumDescriptor) -> dict[int, str]:
    """Enum number -> the name a column stores: the value's name without the enum's
    prefix, in lower case (JobStatus.JOB_STATUS_RUNNING -> "running"). The zero value
    (UNSPECIFIED) has none."""
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    return {
        value.number: value.name.removeprefix(prefix).lower()
        for value in enum.values
        if value.number != 0
    }


def json_value(value: struct_pb2.Value) -> Any:
    """A google.protobuf.Value as plain JSON data; integral numbers become ints."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return json_object(value.struct_value)
    if kind == "list_value":
        return [json_value(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        exact = math.isfinite(number) and number.is_integer() and abs(number) <= _EXACT_INTEGERS
        return int(number) if exact else number
    if kind in ("string_value", "bool_value"):
        return getattr(value, kind)
    return None


def json_object(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: json_value(item) for key, item in struct.fields.items()}


def _reader(field: Any) -> Reader:
    """How to read `field` from a row, for fields that are not plain scalars, text
    or timestamps (those `to_message` reads inline)."""
    name = field.name
    if name == ETAG:
        return lambda row: str(row["version"])
    if _message_kind(field) == _STRUCT:
        return lambda row: None if row[name] is None else _struct(row[name])
    if field.enum_type is not None:
        numbers = {text: number for number, text in stored_enum_names(field.enum_type).items()}
        return lambda row: numbers.get(row[name])
    raise ValueError(f"{field.full_name}: no reader for its type")


def _message_kind(field: Any) -> str | None:
    return field.message_type.full_name if field.message_type is not None else None


def _uuid_or_text(value: str) -> uuid.UUID | str:
    """A reference's UUID; text that is none is left for the field's check to refuse."""
    try:
        return parse_uuid(value)
    except ValueError:
        return value


def _datetime(value: timestamp_pb2.Timestamp) -> datetime | timestamp_pb2.Timestamp:
    """A Timestamp as a datetime; one outside Timestamp's range stays as it is, for the
    field's check to refuse (validation.moment)."""
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        return value


def _optional_uuid(value: str) -> uuid.UUID | str | None:
    """An optional reference: empty clears it."""
    return _uuid_or_text(value) if value else None


def _writer(field: Any, references: Collection[str]) -> Writer:
    """How to turn `field`'s value into a column value."""
    if field.is_repeated:
        return list  # a JSON array column
    if _message_kind(field) == _TIMESTAMP:
        return _datetime
    if field.message_type is not None and field.message_type.full_name == _STRUCT:
        return json_object
    if field.enum_type is not None:
        names = stored_enum_names(field.enum_type)
        # UNSPECIFIED is None; an unknown number stays a number, for the check to refuse.
        return lambda number: names.get(number, number) if number else None
    if field.name in references:
        return _optional_uuid if field.has_presence else _uuid_or_text
    return lambda value: value


class MessageMapping(Generic[M]):
    """Maps one resource message to and from rows of its table.

    Fields map to columns of the same name. Timestamps, google.protobuf.Struct (JSON
    columns), enums (stored by name: see `stored_enum_names`), UUIDs and exact decimals
    (read as text) are converted both ways.

    Args:
        message_cls: The generated resource class (User).
        updatable: Fields a client may write; the rest are output only.
        immutable: Fields a create may set that no update may change (AIP-203).
        references: String fields holding the UUID of another resource.
        nullable: Fields with presence whose column stores NULL when the message lacks
            them (a Timestamp, an `optional` scalar): not their zero value.
        unmapped: Fields that are no column (related resources, shown by `expand`).
    """

    def __init__(
        self,
        message_cls: type[M],
        updatable: Collection[str],
        *,
        immutable: Collection[str] = (),
        references: Collection[str] = (),
        nullable: Collection[str] = (),
        unmapped: Collection[str] = (),
    ) -> None:
        self.message_cls = message_cls
        fields = [f for f in message_cls.DESCRIPTOR.fields if f.name not in unmapped]
        self.updatable = frozenset(updatable)
        self.immutable = frozenset(immutable)
        self._writable = self.updatable | self.immutable
        unknown = (self._writable | set(references)) - {f.name for f in fields}
        if unknown:
            raise ValueError(f"{message_cls.__name__} has no fields {sorted(unknown)}")
        # Fields by how a row's value becomes theirs; `to_message` runs for every row a
        # call returns, and reading the common kinds inline costs half what a reader
        # function per field does.
        plain = [f for f in fields if f.name != ETAG and f.enum_type is None]
        self._timestamps = [f.name for f in plain if _message_kind(f) == _TIMESTAMP]
        self._texts = [f.name for f in plain if f.type == f.TYPE_STRING]
        self._scalars = [
            f.name for f in plain if f.message_type is None and f.type != f.TYPE_STRING
        ]
        inline = {*self._timestamps, *self._texts, *self._scalars}
        self._readers = [(f.name, _reader(f)) for f in fields if f.name not in inline]
        self._writers = {f.name: _writer(f, references) for f in fields}
        self._nullable = frozenset(nullable)

    def to_message(self, row: Row) -> M:
        # A None value leaves its field unset, in the constructor as here.
        values = {name: row[name] for name in self._scalars}
        for name in self._texts:
            value = row[name]
            if value is not None:
                values[name] = value if value.__class__ is str else _plain(value)
        for name in self._timestamps:
            value = row[name]
            if value is not None:
                values[name] = _timestamp_fields(value)
        for name, read in self._readers:
            value = read(row)
            if value is not None:
                values[name] = value
        return self.message_cls(**values)

    def to_values(self, message: M, paths: Collection[str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for path in paths:
            if path in self._nullable and not message.HasField(path):
                values[path] = None
            else:
                values[path] = self._writers[path](getattr(message, path))
        return values

    def populated(self, message: M) -> list[str]:
        """Writable fields the client set (non-default, or present for `optional`)."""
        return [f.name for f, _ in message.ListFields() if f.name in self._writable]

    def mask_paths(
        self, message: M, mask: field_mask_pb2.FieldMask | None, field: str = "update_mask"
    ) -> list[str]:
        """AIP-134: the mask's paths, `*` for all, or the populated fields when absent."""
        if mask is None or not mask.paths:
            # Immutable fields sent along are ignored, as output-only ones are.
            return [name for name in self.populated(message) if name in self.updatable]
        if list(mask.paths) == ["*"]:
            return sorted(self.updatable)
        paths = []
        for path in mask.paths:
            if path in self.immutable:
                raise InvalidArgument.field(field, f"{path!r} cannot change after create")
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
