"""What an Update (or one item of a BatchUpdate) writes, and how.

- `update_mask` paths name whole fields (`title`) or keys inside a Struct field
  (AIP-161: `payload.theme`). A key the request's Struct holds is set to its value;
  one it lacks is removed; the rest of the stored document stays as it is when the
  write runs (repositories/merging.py), so updates of other keys are never lost.
  A path and a path inside it (`payload` with `payload.theme`) are INVALID_ARGUMENT.
  The declared rules and field checks run on the document as it would be written.
- `allow_missing` (AIP-134): when the tenant has no row with the message's id, the
  update creates it, with that id, as a Create would (required fields, defaults,
  every rule); the mask is ignored for the create. With an etag it does not create:
  a version of a missing row cannot match.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from repositories.base import Repository, Row
from repositories.errors import InvalidArgument, NotFound
from repositories.merging import update_merged
from server import field_paths, validation
from server.mapping import MessageMapping, json_object, parse_etag

if TYPE_CHECKING:
    from server.resource_types import Resource

Values = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Edit:
    """One key of a Struct field set (`present`) or removed."""

    keys: tuple[str, ...]
    present: bool
    value: Any = None


@dataclass(frozen=True)
class Change:
    """One row's update as its request asks for it."""

    key: uuid.UUID
    values: Values  # whole fields
    version: int | None
    # Struct field -> the keys set or removed in it.
    edits: Mapping[str, Sequence[Edit]]
    # Raises INVALID_ARGUMENT for documents (by field) the edits would write.
    check: Callable[[Values], None]
    # allow_missing: the values a create of the row would write; None: no create.
    create: Callable[[], Values] | None = None

    @property
    def one_statement(self) -> bool:
        """Whether the write is one UPDATE (which may run in autocommit)."""
        return not self.edits and self.create is None


def change(
    resource: Resource[Any],
    request: Any,
    prefix: str,
    create_values: Callable[[Any, str], Values],
) -> Change:
    """The Change an Update request (`prefix`: "requests[2]." in a batch) asks for;
    INVALID_ARGUMENT for a malformed one. `create_values(message, name)`: what a
    Create of the message would write."""
    mapping, name = resource.mapping, resource.name
    message = getattr(request, name)
    key = validation.resource_id(getattr(message, "id", ""), f"{prefix}{name}.id")
    version = parse_etag(getattr(message, "etag", ""), f"{prefix}{name}.etag")
    mask = request.update_mask if request.HasField("update_mask") else None
    whole, inside = mask_paths(mapping, message, mask, f"{prefix}update_mask")
    if resource.rules is not None:
        resource.rules(message, whole, f"{prefix}{name}")
    values = mapping.to_values(message, whole)
    edits = _edits(message, inside)
    if not values and not edits:
        raise InvalidArgument.field(f"{prefix}update_mask", "names no field to update")
    validation.check_fields(values, resource.checks, f"{prefix}{name}")

    def check(documents: Values) -> None:
        written = copy.deepcopy(message)
        for field, document in documents.items():
            written.ClearField(field)
            if document is not None:
                getattr(written, field).update(document)
        if resource.rules is not None:
            resource.rules(written, list(documents), f"{prefix}{name}")
        validation.check_fields(documents, resource.checks, f"{prefix}{name}")

    create = None
    if getattr(request, "allow_missing", False):

        def create() -> Values:
            return create_values(message, f"{prefix}{name}")

    return Change(key, values, version, edits, check, create)


def mask_paths(
    mapping: MessageMapping[Any],
    message: Message,
    mask: field_mask_pb2.FieldMask | None,
    request_field: str,
) -> tuple[list[str], list[field_paths.Path]]:
    """(the whole fields the update writes, the paths into Struct fields it edits)."""
    texts = list(mask.paths) if mask is not None else []
    if not texts or field_paths.every_field(texts, request_field):
        return mapping.mask_paths(message, mask, request_field), []
    fields = []
    for text in texts:
        try:
            fields.append(field_paths.split(text)[0])
        except ValueError as exc:
            raise InvalidArgument.field(request_field, f"{text!r} {exc}") from None
    # The fields' own errors first: immutable, output only, no such field.
    names = mapping.mask_paths(message, field_mask_pb2.FieldMask(paths=fields), request_field)
    structs = field_paths.struct_fields(message.DESCRIPTOR)
    paths = field_paths.parse(texts, names, structs, request_field)
    field_paths.refuse_nested(paths, request_field)
    return [path.field for path in paths if not path.keys], [path for path in paths if path.keys]


def merged(stored: Any, edits: Sequence[Edit]) -> Any:
    """A stored document (None: absent) with `edits` made; still None when it was absent
    and the edits only remove."""
    if stored is None and not any(edit.present for edit in edits):
        return None
    document = copy.deepcopy(stored) if isinstance(stored, dict) else {}
    for edit in edits:
        if edit.present:
            field_paths.put(document, edit.keys, edit.value)
        else:
            field_paths.drop(document, edit.keys)
    return document


async def write(repo: Repository, change: Change) -> Row:
    """Runs `change` in `repo`'s unit of work; returns the row as written."""
    try:
        if not change.edits:
            return await repo.update(change.key, change.values, change.version)
        return await update_merged(
            repo, change.key, lambda row: _values(change, row), change.version
        )
    except NotFound as exc:
        if change.create is None or change.version is not None or not _is(exc, repo, change.key):
            raise
    # The tenant has no row with this id (another tenant's is no matter: a row's key is
    # its tenant and id). A racing create of the same id fails on the primary key and
    # the call is retried (ErrorContext.racing), to update what the other created.
    return await repo.create({**change.create(), "id": change.key})


def _values(change: Change, row: Row) -> Values:
    documents = {field: merged(row[field], edits) for field, edits in change.edits.items()}
    change.check(documents)
    return {**change.values, **documents}


def _edits(message: Message, paths: Sequence[field_paths.Path]) -> dict[str, list[Edit]]:
    edits: dict[str, list[Edit]] = {}
    sent: dict[str, Any] = {}
    for path in paths:
        if path.field not in sent:
            present = message.HasField(path.field)
            sent[path.field] = json_object(getattr(message, path.field)) if present else None
        found, value = field_paths.value_at(sent[path.field], path.keys)
        edits.setdefault(path.field, []).append(Edit(path.keys, found, value))
    return edits


def _is(error: NotFound, repo: Repository, key: uuid.UUID) -> bool:
    """Whether `error` says the row being updated is missing (not a row it refers to)."""
    meta = error.metadata
    return meta.get("resource_type") == repo.entity.resource_type and meta.get("id") == str(key)
