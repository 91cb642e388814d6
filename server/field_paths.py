"""Field mask paths (AIP-161), one grammar for read masks and update masks.

A path names a field of the resource (`title`), or a key inside one of its
google.protobuf.Struct fields, at any depth (`payload.theme`, `payload.ui.font`).
A key is quoted in backticks (`` payload.`John Smith` ``), as one holding `.`
(`` payload.`a.b` ``) and the key `*` (`` payload.`*` ``) must be; no key holds a
backtick. `*` for every key of a Struct is not supported.
Struct values are JSON: `put`, `drop` and `pick` walk them as nested objects only,
so a key never indexes into a list.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor

from repositories.errors import InvalidArgument
from server.validation import MAX_JSON_DEPTH

_STRUCT = struct_pb2.Struct.DESCRIPTOR.full_name
# One segment: a quoted key, or text without the grammar's characters.
_SEGMENT = re.compile(r"`([^`]+)`|([^.`]+)")
_PLAIN = re.compile(r"[^.`]+")


@dataclass(frozen=True, slots=True)
class Path:
    """A mask path: the resource's field, and the keys inside it (none: the whole field)."""

    field: str
    keys: tuple[str, ...] = ()

    def __str__(self) -> str:
        return ".".join((self.field, *(_quoted(key) for key in self.keys)))


def struct_fields(message: Descriptor | Any) -> frozenset[str]:
    """The fields of `message` that are google.protobuf.Struct: paths may go into them."""
    return frozenset(
        f.name
        for f in message.fields
        if f.message_type is not None and f.message_type.full_name == _STRUCT
    )


def every_field(texts: Sequence[str], request_field: str) -> bool:
    """Whether a mask's paths are `*` (every field); INVALID_ARGUMENT naming
    `request_field` when `*` comes with other paths."""
    if "*" not in texts:
        return False
    if len(texts) > 1:
        raise InvalidArgument.field(request_field, "'*' (every field) stands alone")
    return True


def split(text: str) -> tuple[str, ...]:
    """The segments of one path; ValueError saying what is wrong with it."""
    segments: list[str] = []
    position = 0
    while True:
        match = _SEGMENT.match(text, position)
        if match is None:
            raise ValueError("is not a path of field names and keys joined by '.'")
        if match.group(2) == "*" and segments:
            raise ValueError("names keys with '*', which is not supported: name the field")
        segments.append(match.group(1) or match.group(2))
        position = match.end()
        if position == len(text):
            return tuple(segments)
        if text[position] != ".":
            raise ValueError("is not a path of field names and keys joined by '.'")
        position += 1


def parse(
    paths: Iterable[str],
    fields: Collection[str],
    structs: Collection[str],
    request_field: str,
) -> list[Path]:
    """The mask's paths, each naming one of `fields`, and keys only inside `structs`.
    Repeated paths count once. INVALID_ARGUMENT naming `request_field` for any other."""
    parsed: dict[Path, None] = {}  # in the mask's order
    for text in paths:
        try:
            segments = split(text)
        except ValueError as exc:
            raise InvalidArgument.field(request_field, f"{text!r} {exc}") from None
        field, keys = segments[0], segments[1:]
        if field not in fields:
            raise InvalidArgument.field(request_field, f"{text!r}: there is no field {field!r}")
        if keys and field not in structs:
            raise InvalidArgument.field(
                request_field,
                f"{text!r}: {field!r} has no keys to name; only a google.protobuf.Struct does",
            )
        if len(keys) > MAX_JSON_DEPTH:
            raise InvalidArgument.field(
                request_field, f"{text!r} goes deeper than {MAX_JSON_DEPTH} keys"
            )
        parsed[Path(field, keys)] = None
    return list(parsed)


def refuse_nested(paths: Collection[Path], request_field: str) -> None:
    """INVALID_ARGUMENT when one path names a parent of another (`payload` with
    `payload.theme`): an update could not say which of them decides. Each path's parents
    are looked up, so a mask of many paths costs no more than their keys."""
    named = set(paths)
    for path in paths:
        for depth in range(len(path.keys)):
            parent = Path(path.field, path.keys[:depth])
            if parent in named:
                raise InvalidArgument.field(
                    request_field, f"{str(path)!r} is inside {str(parent)!r}: name one of them"
                )


def value_at(document: Any, keys: tuple[str, ...]) -> tuple[bool, Any]:
    """(whether it is there, the value) at `keys` in a JSON document."""
    node = document
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def put(document: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    """Sets `keys` in `document` to `value`; a missing or non-object value on the way
    becomes an object."""
    node = document
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def drop(document: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Removes `keys` from `document`, if it is there."""
    found, parent = value_at(document, keys[:-1])
    if found and isinstance(parent, dict):
        parent.pop(keys[-1], None)


def pick(struct: struct_pb2.Struct, keys: Iterable[tuple[str, ...]]) -> struct_pb2.Struct:
    """A Struct holding only the values of `struct` at each of `keys` (those present)."""
    out = struct_pb2.Struct()
    for path in keys:
        node: struct_pb2.Struct | None = struct
        for key in path[:-1]:
            value = node.fields.get(key) if node is not None else None
            node = value.struct_value if value is not None and _is_object(value) else None
        if node is None or path[-1] not in node.fields:
            continue
        into = out
        for key in path[:-1]:
            into = into.fields[key].struct_value
        into.fields[path[-1]].CopyFrom(node.fields[path[-1]])
    return out


def by_field(paths: Iterable[Path]) -> Mapping[str, list[tuple[str, ...]]]:
    """The keys of each field's sub-paths."""
    grouped: dict[str, list[tuple[str, ...]]] = {}
    for path in paths:
        if path.keys:
            grouped.setdefault(path.field, []).append(path.keys)
    return grouped


def _is_object(value: struct_pb2.Value) -> bool:
    return value.WhichOneof("kind") == "struct_value"


def _quoted(key: str) -> str:
    return key if _PLAIN.fullmatch(key) and key != "*" else f"`{key}`"
