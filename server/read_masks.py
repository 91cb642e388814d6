"""AIP-157 read masks: the fields (and Struct keys) a Get, List or BatchGet answers with.

List and BatchGet select only the columns the mask needs (and those the page's order
and the batch's ids need): a large document left out is neither read nor decoded.
A Get reads through the cache, which keeps whole rows: a masked Get is served from
it, or loads the whole row and fills it, like any other, and the mask applies to
what it gives. No partial message is ever cached.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, cast

from google.protobuf.message import Message
from sqlalchemy import ColumnElement, Table

from repositories.ordering import Order
from server import field_paths
from server.mapping import ETAG, M, MessageMapping

FIELD = "read_mask"


class ReadMask:
    """Clears what a mask leaves out of a resource message."""

    def __init__(self, message_cls: type[Message], paths: Sequence[field_paths.Path]) -> None:
        whole = {path.field for path in paths if not path.keys}
        self._keys = {
            field: keys for field, keys in field_paths.by_field(paths).items() if field not in whole
        }
        self._cleared = [
            f.name
            for f in message_cls.DESCRIPTOR.fields
            if f.name not in whole and f.name not in self._keys
        ]
        # The columns the kept fields are read from: each field's own; the etag's is `version`.
        self._columns = [
            "version" if name == ETAG else name for name in sorted(whole | set(self._keys))
        ]

    def columns(self, table: Table, order: Order = ()) -> list[ColumnElement[Any]]:
        """The columns of `table` to select: the mask's, `id`, and the sort keys of
        `order` (labelled by their names, as a page's position reads them)."""
        chosen: dict[str, ColumnElement[Any]] = {"id": table.c.id}
        for name in self._columns:
            if name in table.c:
                chosen[name] = table.c[name]
        for key in order:
            if key.name not in chosen:
                column = key.column
                plain = getattr(column, "table", None) is table and _name(column) == key.name
                chosen[key.name] = column if plain else column.label(key.name)
        return list(chosen.values())

    def messages(self, rows: Iterable[Any], mapping: MessageMapping[M]) -> list[M]:
        """The masked messages of rows holding only `columns`."""
        return [self.apply(mapping.to_message(_Sparse(row))) for row in rows]

    def apply(self, message: M) -> M:
        """`message` with only the mask's fields set (changed in place)."""
        for name in self._cleared:
            message.ClearField(name)
        for name, keys in self._keys.items():
            if message.HasField(name):
                struct = getattr(message, name)
                picked = field_paths.pick(struct, keys)
                struct.Clear()
                struct.MergeFrom(picked)
                struct.SetInParent()
        return message


class _Sparse(dict[str, Any]):
    """A row of some columns only: the others read as NULL, so their fields stay unset."""

    def __missing__(self, key: str) -> None:
        return None


def _name(column: ColumnElement[Any]) -> str | None:
    return getattr(column, "name", None)


def of(request: Any, message_cls: type[Message]) -> ReadMask | None:
    """The request's `read_mask` for `message_cls`; None when it has none, or it is
    empty or `*` (every field). INVALID_ARGUMENT naming `read_mask` for a path that
    names no field of the resource, or a key inside a field that is no Struct."""
    mask = getattr(request, FIELD, None)
    if mask is None or not mask.paths:
        return None
    paths = tuple(mask.paths)
    if len(paths) > _CACHED_PATHS:
        return _compile(message_cls, paths)  # a key this large is not worth keeping
    # A generated class is hashable, though protobuf's stubs say otherwise.
    return _compiled(cast(Hashable, message_cls), paths)


# Masks of up to this many paths are compiled once per message class.
_CACHED_PATHS = 32


@functools.lru_cache(maxsize=512)
def _compiled(message_cls: Any, paths: tuple[str, ...]) -> ReadMask | None:
    return _compile(message_cls, paths)


def _compile(message_cls: Any, paths: tuple[str, ...]) -> ReadMask | None:
    if field_paths.every_field(paths, FIELD):
        return None
    descriptor = message_cls.DESCRIPTOR
    fields = [f.name for f in descriptor.fields]
    structs = field_paths.struct_fields(descriptor)
    return ReadMask(message_cls, field_paths.parse(paths, fields, structs, FIELD))
