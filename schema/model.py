"""What a resource declares in its .proto, read from its descriptors into plain specs.

Everything else in `schema` (tables, repositories, services, migrations) is built
from these specs; `SchemaError` names the message or field a declaration is wrong in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from repogate.options.v1 import options_pb2
from repositories.json_paths import KEY

# Columns every resource table has (repositories.tables.standard_columns), by the message
# field that may show them; `etag` shows `version`.
STANDARD_FIELDS: Mapping[str, str] = {
    "id": "string",
    "etag": "string",
    "create_time": "timestamp",
    "update_time": "timestamp",
    "delete_time": "timestamp",
    "purge_time": "timestamp",
    "created_by": "string",
    "updated_by": "string",
}
TIMESTAMP = "google.protobuf.Timestamp"
STRUCT = "google.protobuf.Struct"
_INTS32 = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32}
_INTS64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_FIXED32,
}
_FLOATS = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
# Identifiers that become table, column and index names: portable and unquoted.
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,47}")


class SchemaError(ValueError):
    """A schema declares something Repogate cannot store or serve; says where and why."""


@dataclass(frozen=True)
class FieldSpec:
    """One stored field of a resource.

    kind: string, int32, int64, double, bool, bytes, enum, timestamp, struct, list
    (a repeated scalar, stored as a JSON array), or uuid (a reference).
    """

    name: str
    kind: str
    nullable: bool
    options: options_pb2.FieldOptions
    descriptor: FieldDescriptor
    # For kind "list": the element's kind.
    element: str = ""
    # The default as a Python value (None: the kind's zero, or NULL when nullable).
    default: Any = None
    # A string's `(buf.validate.field).string.max_len`: it sizes the column too.
    max_length: int | None = None

    @property
    def writable(self) -> bool:
        o = self.options
        return not (o.output_only or o.counter or o.HasField("sequence"))

    @property
    def reference(self) -> str:
        return self.options.reference.resource if self.options.HasField("reference") else ""


@dataclass(frozen=True)
class ResourceSpec:
    """A resource message and everything its options declare."""

    message: Descriptor
    singular: str  # "task_run": errors, the Create/Update request field
    plural: str  # "task_runs": the List/Batch response field
    method_singular: str  # "TaskRun": in method names
    method_plural: str  # "TaskRuns"
    table: str
    default_order: str
    fields: tuple[FieldSpec, ...]
    indexes: tuple[options_pb2.Index, ...] = ()
    # Standard columns the message shows, besides id and etag.
    shown: frozenset[str] = field(default_factory=frozenset)
    # Fields the message shows that are not stored: related resources and the flags
    # saying a list of them was cut (schema/related.py reads and checks them).
    unstored: frozenset[str] = field(default_factory=frozenset)

    def field(self, name: str) -> FieldSpec:
        for each in self.fields:
            if each.name == name:
                return each
        raise KeyError(name)

    @property
    def counters(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.options.counter)

    @property
    def sequence(self) -> FieldSpec | None:
        return next((f for f in self.fields if f.options.HasField("sequence")), None)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# The generated stubs type extensions as plain FieldDescriptors.
_RESOURCE: Any = options_pb2.resource
_FIELD: Any = options_pb2.field


def is_resource(message: Descriptor) -> bool:
    return message.GetOptions().HasExtension(_RESOURCE)


def resource_spec(message: Descriptor) -> ResourceSpec:
    """The spec of a message marked with `(repogate.options.v1.resource)`."""
    opts: options_pb2.ResourceOptions = message.GetOptions().Extensions[_RESOURCE]
    where = message.full_name
    singular = opts.singular or snake(message.name)
    method_plural = opts.plural or message.name + "s"
    plural = snake(method_plural)
    table = opts.table or plural
    for what, value in (("table", table), ("singular", singular), ("plural", plural)):
        _identifier(value, f"{where}: {what}")
    if "id" not in message.fields_by_name:
        raise SchemaError(f"{where}: a resource needs a `string id` field")
    fields = []
    shown = set()
    unstored = _unstored(message)
    for f in message.fields:
        if f.name in STANDARD_FIELDS:
            _standard(f, where)
            shown.add(f.name)
            continue
        if f.name not in unstored:
            fields.append(_field(f, where))
    spec = ResourceSpec(
        message=message,
        singular=singular,
        plural=plural,
        method_singular=message.name,
        method_plural=method_plural,
        table=table,
        default_order=opts.default_order or "create_time",
        fields=tuple(fields),
        indexes=tuple(opts.indexes),
        shown=frozenset(shown - {"id", "etag"}),
        unstored=frozenset(unstored - set(STANDARD_FIELDS)),
    )
    _check_cross_field(spec)
    return spec


def _unstored(message: Descriptor) -> set[str]:
    """Fields declared `related`, and the `truncated` flags they name."""
    names = set()
    for f in message.fields:
        options: options_pb2.FieldOptions = f.GetOptions().Extensions[_FIELD]
        if options.HasField("related"):
            names.add(f.name)
            if options.related.truncated:
                names.add(options.related.truncated)
    return names


def _identifier(value: str, where: str) -> None:
    if not _IDENTIFIER.fullmatch(value):
        raise SchemaError(f"{where}: {value!r} must be lower case letters, digits and _")


def _standard(f: FieldDescriptor, where: str) -> None:
    expected = STANDARD_FIELDS[f.name]
    actual = _scalar_kind(f) if not f.is_repeated else "list"
    if actual != expected:
        raise SchemaError(f"{where}.{f.name}: Repogate manages it; declare it as a {expected}")
    if f.GetOptions().HasExtension(_FIELD):
        raise SchemaError(f"{where}.{f.name}: Repogate manages it; it takes no options")


def _scalar_kind(f: FieldDescriptor) -> str:
    if f.message_type is not None:
        name = f.message_type.full_name
        return {TIMESTAMP: "timestamp", STRUCT: "struct"}.get(name, name)
    if f.enum_type is not None:
        return "enum"
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        return "string"
    if t == FieldDescriptor.TYPE_BOOL:
        return "bool"
    if t == FieldDescriptor.TYPE_BYTES:
        return "bytes"
    if t in _INTS32:
        return "int32"
    if t in _INTS64:
        return "int64"
    if t in _FLOATS:
        return "double"
    # uint64 and fixed64: they do not fit a signed BIGINT.
    return "uint64"


_STORABLE = {"string", "int32", "int64", "double", "bool", "bytes", "enum", "timestamp", "struct"}
_LIST_ELEMENTS = {"string", "int32", "int64", "double", "bool"}


def _field(f: FieldDescriptor, where: str) -> FieldSpec:
    name = f"{where}.{f.name}"
    _identifier(f.name, name)
    o: options_pb2.FieldOptions = f.GetOptions().Extensions[_FIELD]
    repeated = f.is_repeated
    kind = _scalar_kind(f)
    element = ""
    if repeated:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            raise SchemaError(f"{name}: maps are not stored; use a google.protobuf.Struct")
        if kind not in _LIST_ELEMENTS:
            raise SchemaError(f"{name}: only repeated scalars are stored (got {kind})")
        element, kind = kind, "list"
    elif kind not in _STORABLE:
        raise SchemaError(
            f"{name}: a {kind} cannot be stored; use a scalar, an enum, a Timestamp, "
            "a Struct or a repeated scalar"
        )
    if o.HasField("reference"):
        if kind != "string":
            raise SchemaError(f"{name}: a reference must be a string (it holds an id)")
        kind = "uuid"
    if o.counter and kind not in ("int32", "int64"):
        raise SchemaError(f"{name}: a counter must be an integer")
    if o.HasField("sequence") and kind != "int64":
        raise SchemaError(f"{name}: a sequence number must be an int64")
    if o.case_insensitive and not (o.unique and kind == "string"):
        raise SchemaError(f"{name}: case_insensitive applies to unique strings only")
    if o.searchable and kind != "struct":
        raise SchemaError(f"{name}: searchable applies to google.protobuf.Struct fields")
    # Message fields and proto3 `optional` fields have presence: NULL when unset, unless
    # required (on an output-only field: the server sets it on every row).
    nullable = f.has_presence and not (repeated or o.required or o.counter)
    nullable = nullable and not o.HasField("sequence")
    if o.sortable and kind in ("struct", "list", "bytes"):
        raise SchemaError(f"{name}: a {kind} field cannot be sorted on")
    if o.filterable and kind == "bytes":
        raise SchemaError(f"{name}: a bytes field cannot be filtered on")
    default = _default(f, o, kind, name) if o.default else None
    return FieldSpec(f.name, kind, nullable, o, f, element, default, _max_length(f))


def _max_length(f: FieldDescriptor) -> int | None:
    """The string's protovalidate max_len, when the schema imports protovalidate."""
    try:
        rules: Any = descriptor_pool.Default().FindExtensionByName("buf.validate.field")
    except KeyError:
        return None
    options = f.GetOptions()
    if not options.HasExtension(rules):
        return None
    string: Any = options.Extensions[rules].string
    return int(string.max_len) if string.HasField("max_len") else None


def _default(f: FieldDescriptor, o: options_pb2.FieldOptions, kind: str, name: str) -> Any:
    try:
        value = json.loads(o.default)
    except ValueError:
        raise SchemaError(f"{name}: default {o.default!r} is not JSON") from None
    expected: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "enum": str,
        "int32": int,
        "int64": int,
        "double": (int, float),
        "bool": bool,
        "struct": dict,
        "list": list,
    }
    wanted = expected.get(kind)
    if wanted is None or not isinstance(value, wanted) or (kind != "bool" and value is True):
        raise SchemaError(f"{name}: default {o.default!r} does not fit a {kind}")
    if kind == "enum":
        enum = f.enum_type
        assert enum is not None
        if value not in {v.name for v in enum.values}:
            raise SchemaError(f"{name}: default {value!r} is not a value of {enum.name}")
    return value


def _check_cross_field(spec: ResourceSpec) -> None:
    where = spec.message.full_name
    own = {f.name for f in spec.fields}
    names = own | set(STANDARD_FIELDS)
    for f in spec.fields:
        o = f.options
        if o.HasField("sequence"):
            parent = o.sequence.parent
            if parent not in own or not spec.field(parent).reference:
                raise SchemaError(f"{where}.{f.name}: sequence parent {parent!r} is no reference")
            if spec.field(parent).nullable:
                raise SchemaError(f"{where}.{f.name}: sequence parent {parent!r} may be unset")
        if o.HasField("reference"):
            on_delete = o.reference.on_delete
            if on_delete == options_pb2.ON_DELETE_SET_NULL and not f.nullable:
                raise SchemaError(f"{where}.{f.name}: ON_DELETE_SET_NULL needs an optional field")
    for index in spec.indexes:
        for part in index.fields:
            column = part.removesuffix(" desc").strip()
            head, dot, path = column.partition(".")
            if dot:
                _index_path(spec, where, head, path)
            elif column not in names or column == "etag":
                raise SchemaError(f"{where}: index field {column!r} is not a field")


MAX_INDEXED_PATH = 8


def _index_path(spec: ResourceSpec, where: str, head: str, path: str) -> None:
    """`head.path` in an index: a path into a Struct field, which filters on the path use."""
    own = {f.name: f for f in spec.fields}
    if head not in own or own[head].kind != "struct":
        raise SchemaError(f"{where}: index field {head}.{path}: {head!r} is not a Struct field")
    keys = path.split(".")
    if len(keys) > MAX_INDEXED_PATH or not all(KEY.fullmatch(key) for key in keys):
        raise SchemaError(
            f"{where}: index field {head}.{path}: a path is 1 to {MAX_INDEXED_PATH} keys "
            "of letters, digits and _, each starting with a letter or _"
        )
