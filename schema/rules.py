"""A resource's validation rules: protovalidate's `buf.validate` annotations, run by
the `protovalidate` package, so Go, Java and TypeScript clients can run the same
rules before they call.

The violations become one INVALID_ARGUMENT with a google.rpc.BadRequest naming
each field as the request does ("task.title", "requests[2].task.title").
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from repositories.errors import FieldViolation, InvalidArgument

if TYPE_CHECKING:
    import protovalidate


def check(
    message: Message, written: Collection[str] | None, prefix: str, ignored: Collection[str] = ()
) -> None:
    """Raises InvalidArgument for `message`'s violations: of every field (a create), or
    of the `written` fields only (an update: the others are not written, and their
    zero values in the request are not the stored ones); never of `ignored` fields (the
    related resources a message shows, which no write stores)."""
    # Imported here, not with the server: with the pure-Python protobuf runtime it
    # brings it holds 12 MiB (a server's modules take 105 MiB with it, 93 without), and
    # only declared resources run it. No call pays for the import (67 ms of CPU): a
    # server with a schema loaded it as it started, to read buf/validate/validate.proto
    # (schema/loading.py).
    import protovalidate

    try:
        found = protovalidate.collect_violations(message)
    except protovalidate.EvaluationError as exc:
        # A rule that cannot be evaluated on this value (a CEL runtime error).
        raise InvalidArgument.field(prefix, f"could not be validated: {exc}") from None
    violations = []
    for violation in found:
        path = _path(violation)
        field = path.split(".", 1)[0].split("[", 1)[0]
        if (written is not None and field not in written) or field in ignored:
            continue
        violations.append(
            FieldViolation(".".join(p for p in (prefix, path) if p), _message(violation))
        )
    if violations:
        summary = "; ".join(f"{v.field} {v.description}" for v in violations)
        raise InvalidArgument(f"invalid request: {summary}", violations)


def _path(violation: protovalidate.Violation) -> str:
    parts: list[str] = []
    path = violation.proto.field
    for element in path.elements if path is not None else ():
        # protobuf-py's oneof: None, or a case holding the index or map key.
        subscript = element.subscript
        name = element.field_name
        if subscript is None:
            parts.append(name)
        else:
            parts.append(f"{name}[{getattr(subscript, 'value', subscript)}]")
    return ".".join(parts)


def _message(violation: protovalidate.Violation) -> str:
    proto = violation.proto
    return proto.message or proto.rule_id or "is invalid"
