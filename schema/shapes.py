"""Which standard method a schema's method is, by its name and shape.

Each resource R (plural Rs) has Create<R>, Get<R>, Update<R>, Delete<R>,
Undelete<R>, Increment<R>Counters, List<Rs>, Count<Rs>, BatchGet<Rs>,
BatchCreate<Rs>, BatchUpdate<Rs>, BatchDelete<Rs>, Aggregate<Rs> and Rank<R>,
with the request and response fields of AIP-131..135 and 231..235, and of
docs/aggregation.md (docs/schema.md lists them).
`bind` checks every method first; one it cannot serve is a SchemaError naming
the method and the shape expected, so a schema that starts is served whole.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

from schema.declared import Declared
from schema.model import ResourceSpec, SchemaError

_STRING = FieldDescriptor.TYPE_STRING
_BOOL = FieldDescriptor.TYPE_BOOL
_INT32 = FieldDescriptor.TYPE_INT32
_INT64 = FieldDescriptor.TYPE_INT64
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_ENUM = FieldDescriptor.TYPE_ENUM
_COUNT_MODE = "repogate.v1.CountMode"
_AGGREGATION = "repogate.v1.Aggregation"
_AGGREGATE_GROUP = "repogate.v1.AggregateGroup"


@dataclass(frozen=True)
class Binding:
    verb: str  # "create", "list", ..., or "extension"
    spec: ResourceSpec | None  # None for an extension
    method: MethodDescriptor


def method_name(method: MethodDescriptor) -> str:
    """ "pkg.Service/Method", as extensions name methods."""
    return f"{method.containing_service.full_name}/{method.name}"


def bind(declared: Declared, extensions: Collection[str] = ()) -> list[tuple[str, list[Binding]]]:
    """(service full name, its methods' bindings) for every service of the schema; a
    method named in `extensions` is bound to its extension. Raises SchemaError listing
    every method that fits no shape, and every extension that names no method."""
    problems: list[str] = []
    services = []
    unused = set(extensions)
    for service in declared.schema.services:
        bindings = []
        for method in service.methods:
            name = method_name(method)
            try:
                if name in extensions:
                    unused.discard(name)
                    bindings.append(_extension(method))
                else:
                    bindings.append(_bind(method, declared))
            except SchemaError as exc:
                problems.append(f"{method.full_name}: {exc}")
        services.append((service.full_name, bindings))
    problems += [f"extension {name}: the schema has no such method" for name in sorted(unused)]
    if problems:
        raise SchemaError("methods Repogate cannot serve:\n  " + "\n  ".join(problems))
    return services


def _names(spec: ResourceSpec) -> dict[str, str]:
    s, p = spec.method_singular, spec.method_plural
    return {
        f"Create{s}": "create",
        f"Get{s}": "get",
        f"Update{s}": "update",
        f"Delete{s}": "delete",
        f"Undelete{s}": "undelete",
        f"Increment{s}Counters": "increment",
        f"List{p}": "list",
        f"Count{p}": "count",
        f"BatchGet{p}": "batch_get",
        f"BatchCreate{p}": "batch_create",
        f"BatchUpdate{p}": "batch_update",
        f"BatchDelete{p}": "batch_delete",
        f"Aggregate{p}": "aggregate",
        f"Rank{s}": "rank",
    }


def _extension(method: MethodDescriptor) -> Binding:
    if method.client_streaming or method.server_streaming:
        raise SchemaError("streaming methods are not served")
    return Binding("extension", None, method)


def _bind(method: MethodDescriptor, declared: Declared) -> Binding:
    if method.client_streaming or method.server_streaming:
        raise SchemaError("streaming methods are not served")
    for spec in declared.schema.resources.values():
        verb = _names(spec).get(method.name)
        if verb is not None:
            _SHAPES[verb](method, spec)
            return Binding(verb, spec, method)
    resources = ", ".join(s.message.name for s in declared.schema.resources.values())
    raise SchemaError(
        "its name is no standard method of a resource of this schema "
        f"(Create<R>, Get<R>, List<Rs>, ... of {resources})"
    )


def _field(message: Descriptor, name: str, kind: int, *, repeated: bool = False) -> None:
    f = message.fields_by_name.get(name)
    expected = f"{'repeated ' if repeated else ''}{_KIND_NAMES[kind]} {name}"
    if f is None or f.type != kind or f.is_repeated != repeated:
        raise SchemaError(f"{message.name} needs a field `{expected}`")


def _optional(message: Descriptor, name: str, kind: int, *, repeated: bool = False) -> None:
    if name in message.fields_by_name:
        _field(message, name, kind, repeated=repeated)


def _of(message: Descriptor, name: str, wanted: Descriptor, *, repeated: bool = False) -> None:
    _field(message, name, _MESSAGE, repeated=repeated)
    kind = message.fields_by_name[name].message_type
    if kind is None or kind.full_name != wanted.full_name:
        raise SchemaError(f"{message.name}.{name} must be a {wanted.full_name}")


def _named(message: Descriptor, name: str, full_name: str, *, repeated: bool = False) -> None:
    _field(message, name, _MESSAGE, repeated=repeated)
    kind = message.fields_by_name[name].message_type
    if kind is None or kind.full_name != full_name:
        raise SchemaError(f"{message.name}.{name} must be a {full_name}")


def _read_mask(message: Descriptor) -> None:
    """AIP-157: an optional `google.protobuf.FieldMask read_mask`."""
    if "read_mask" in message.fields_by_name:
        _named(message, "read_mask", "google.protobuf.FieldMask")


def _returns(method: MethodDescriptor, spec: ResourceSpec) -> None:
    if method.output_type.full_name != spec.message.full_name:
        raise SchemaError(f"must return {spec.message.full_name}")


def _holder(method: MethodDescriptor, spec: ResourceSpec) -> None:
    out = method.output_type
    if len(out.fields) != 1:
        raise SchemaError(f"{out.name} must have one field: `repeated {spec.message.name}`")
    _of(out, out.fields[0].name, spec.message, repeated=True)


def _create(method: MethodDescriptor, spec: ResourceSpec) -> None:
    _of(method.input_type, spec.singular, spec.message)
    _optional(method.input_type, "request_id", _STRING)
    _returns(method, spec)


def _get(method: MethodDescriptor, spec: ResourceSpec) -> None:
    _field(method.input_type, "id", _STRING)
    _optional(method.input_type, "expand", _STRING, repeated=True)
    _read_mask(method.input_type)
    _returns(method, spec)


def _update(method: MethodDescriptor, spec: ResourceSpec) -> None:
    _update_item(method.input_type, spec)
    _returns(method, spec)


def _delete(method: MethodDescriptor, spec: ResourceSpec) -> None:
    for name, kind in (("id", _STRING), ("etag", _STRING), ("force", _BOOL)):
        _field(method.input_type, name, kind)
    _returns(method, spec)


def _undelete(method: MethodDescriptor, spec: ResourceSpec) -> None:
    _field(method.input_type, "id", _STRING)
    _field(method.input_type, "etag", _STRING)
    _returns(method, spec)


def _increment(method: MethodDescriptor, spec: ResourceSpec) -> None:
    message = method.input_type
    _field(message, "id", _STRING)
    _optional(message, "etag", _STRING)
    _optional(message, "request_id", _STRING)
    counters = {f.name for f in spec.counters}
    deltas = [f for f in message.fields if f.name not in ("id", "etag", "request_id")]
    for f in deltas:
        if f.name not in counters or f.type not in (_INT32, _INT64) or f.is_repeated:
            raise SchemaError(
                f"{message.name}.{f.name} must be an integer named as a counter of "
                f"{spec.message.name} ({', '.join(sorted(counters)) or 'it has none'})"
            )
    if not deltas:
        raise SchemaError(f"{message.name} names no counter")
    _returns(method, spec)


def _list(method: MethodDescriptor, spec: ResourceSpec) -> None:
    message = method.input_type
    _field(message, "page_size", _INT32)
    _field(message, "page_token", _STRING)
    _query_fields(message)
    _optional(message, "order_by", _STRING)
    _optional(message, "skip", _INT32)
    _optional(message, "expand", _STRING, repeated=True)
    _read_mask(message)
    out = method.output_type
    _of(out, spec.plural, spec.message, repeated=True)
    _field(out, "next_page_token", _STRING)
    _optional(out, "total_size", _INT64)
    _optional(out, "total_size_exact", _BOOL)


def _count(method: MethodDescriptor, spec: ResourceSpec) -> None:
    _query_fields(method.input_type)
    _field(method.output_type, "total_size", _INT64)
    _optional(method.output_type, "total_size_exact", _BOOL)


def _query_fields(message: Descriptor) -> None:
    _optional(message, "filter", _STRING)
    _optional(message, "show_deleted", _BOOL)
    if "count_mode" in message.fields_by_name:
        enum = message.fields_by_name["count_mode"].enum_type
        if enum is None or enum.full_name != _COUNT_MODE:
            raise SchemaError(f"{message.name}.count_mode must be a {_COUNT_MODE}")


def _aggregate(method: MethodDescriptor, spec: ResourceSpec) -> None:
    message = method.input_type
    _field(message, "group_by", _STRING, repeated=True)
    _named(message, "aggregations", _AGGREGATION, repeated=True)
    _field(message, "page_size", _INT32)
    _field(message, "page_token", _STRING)
    for name, kind in (("filter", _STRING), ("order_by", _STRING), ("show_deleted", _BOOL)):
        _optional(message, name, kind)
    _named(method.output_type, "groups", _AGGREGATE_GROUP, repeated=True)
    _field(method.output_type, "next_page_token", _STRING)


def _rank(method: MethodDescriptor, spec: ResourceSpec) -> None:
    _field(method.input_type, "id", _STRING)
    _optional(method.input_type, "order_by", _STRING)
    _optional(method.input_type, "filter", _STRING)
    _field(method.output_type, "rank", _INT64)
    _optional(method.output_type, "total_size", _INT64)


def _batch_get(method: MethodDescriptor, spec: ResourceSpec) -> None:
    _field(method.input_type, "ids", _STRING, repeated=True)
    _optional(method.input_type, "expand", _STRING, repeated=True)
    _read_mask(method.input_type)
    _holder(method, spec)


def _batch(item_shape: Callable[[Descriptor, ResourceSpec], None]) -> Callable[..., None]:
    def check(method: MethodDescriptor, spec: ResourceSpec) -> None:
        message = method.input_type
        _field(message, "requests", _MESSAGE, repeated=True)
        item = message.fields_by_name["requests"].message_type
        assert item is not None  # a message field, as _field checked
        item_shape(item, spec)
        _optional(message, "request_id", _STRING)
        _holder(method, spec)

    return check


def _create_item(message: Descriptor, spec: ResourceSpec) -> None:
    _of(message, spec.singular, spec.message)


def _update_item(message: Descriptor, spec: ResourceSpec) -> None:
    _of(message, spec.singular, spec.message)
    _field(message, "update_mask", _MESSAGE)
    _optional(message, "allow_missing", _BOOL)  # AIP-134 upsert


def _delete_item(message: Descriptor, spec: ResourceSpec) -> None:
    for name, kind in (("id", _STRING), ("etag", _STRING), ("force", _BOOL)):
        _field(message, name, kind)


_SHAPES: dict[str, Callable[[MethodDescriptor, ResourceSpec], None]] = {
    "create": _create,
    "get": _get,
    "update": _update,
    "delete": _delete,
    "undelete": _undelete,
    "increment": _increment,
    "list": _list,
    "count": _count,
    "batch_get": _batch_get,
    "batch_create": _batch(_create_item),
    "batch_update": _batch(_update_item),
    "batch_delete": _batch(_delete_item),
    "aggregate": _aggregate,
    "rank": _rank,
}
_KIND_NAMES = {
    _STRING: "string",
    _BOOL: "bool",
    _INT32: "int32",
    _INT64: "int64",
    _MESSAGE: "message",
    _ENUM: "enum",
}
