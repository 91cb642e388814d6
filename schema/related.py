"""Related resources: a field declared `(repogate.options.v1.field).related` shows the
resource's children (a `repeated` field of the child message) or its parent (a singular
field of the parent message). Such fields are not stored and are output only; a Get,
List or BatchGet fills them when its request names them in `expand`
(server/expansion.py). docs/schema.md, "Related resources", is the manual.

`related` reads and checks one resource's declarations against the schema's resources,
raising SchemaError naming the field; `relations` binds them to the related resources'
repositories and mappings, for serving.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from repogate.options.v1 import options_pb2
from repositories.errors import InvalidArgument
from repositories.ordering import parse_order_by
from schema.model import STANDARD_FIELDS, FieldSpec, ResourceSpec, SchemaError
from server.expansion import Relation
from server.resource_types import Resource

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# A resource message's spec, or None when the message is no resource of the schema.
Find = Callable[[Descriptor], ResourceSpec | None]
_FIELD: Any = options_pb2.field


@dataclass(frozen=True)
class RelatedSpec:
    name: str  # the field: "tasks"
    target: ResourceSpec  # the related resource
    children: bool  # a repeated field
    via: str  # the reference field: the child's (children), or this resource's (parent)
    limit: int  # children only: per parent
    order_by: str  # children only; "" for the child's default order
    truncated: str  # children only: the bool field set when the list is cut; "" for none


def related(spec: ResourceSpec, find: Find) -> tuple[RelatedSpec, ...]:
    """The related fields `spec` declares; SchemaError naming the first wrong one."""
    found: list[RelatedSpec] = []
    for f in spec.message.fields:
        options: options_pb2.FieldOptions = f.GetOptions().Extensions[_FIELD]
        if options.HasField("related"):
            found.append(_related(spec, f, options, find))
    flags: dict[str, str] = {}
    for each in found:
        if each.truncated in flags:
            other = flags[each.truncated]
            raise SchemaError(
                f"{spec.message.full_name}.{each.name}: truncated {each.truncated!r} is "
                f"{other}'s flag already"
            )
        if each.truncated:
            flags[each.truncated] = each.name
    return tuple(found)


def check(resources: Mapping[str, ResourceSpec]) -> None:
    """Checks every resource's related fields (`resources` by message full name)."""
    for spec in resources.values():
        related(spec, lambda message: resources.get(message.full_name))


def relations(
    spec: ResourceSpec, find: Find, served: Mapping[str, Resource[Any]]
) -> tuple[Relation, ...]:
    """`spec`'s related fields, bound to the resources that serve their messages (`served`,
    by message full name). A child order_by the child cannot sort by is a SchemaError."""
    bound = []
    for r in related(spec, find):
        target = served.get(r.target.message.full_name)
        if target is None:
            raise SchemaError(
                f"{spec.message.full_name}.{r.name}: {r.target.message.full_name} is not "
                "served with it"
            )
        entity = target.repository.entity
        try:
            order = parse_order_by(r.order_by, entity.sort_columns(), entity.default_order)
        except InvalidArgument as exc:
            raise SchemaError(
                f"{spec.message.full_name}.{r.name}: order_by {r.order_by!r}: "
                f"{exc.violations[0].description}"
            ) from None
        bound.append(
            Relation(
                name=r.name,
                children=r.children,
                via=r.via,
                repository=target.repository,
                to_message=target.mapping.to_message,
                limit=r.limit,
                order=order if r.children else (),
                truncated=r.truncated,
            )
        )
    return tuple(bound)


def _related(
    spec: ResourceSpec, f: FieldDescriptor, options: options_pb2.FieldOptions, find: Find
) -> RelatedSpec:
    where = f"{spec.message.full_name}.{f.name}"
    others = [o.name for o, _ in options.ListFields() if o.name != "related"]
    if others:
        raise SchemaError(f"{where}: a related field takes no other option ({', '.join(others)})")
    target = find(f.message_type) if f.message_type is not None else None
    if target is None:
        raise SchemaError(f"{where}: a related field's type must be a resource of this schema")
    r = options.related
    if not f.is_repeated:
        own = _field(spec, r.via)
        if own is None or not _refers_to(own, target):
            raise SchemaError(
                f"{where}: via {r.via!r} is no reference field of {spec.message.name} "
                f"to {target.message.name}"
            )
        if r.limit or r.order_by or r.truncated:
            raise SchemaError(
                f"{where}: limit, order_by and truncated apply to children (a repeated field)"
            )
        return RelatedSpec(f.name, target, False, r.via, 0, "", "")
    child = _field(target, r.via)
    if child is None or not _refers_to(child, spec):
        raise SchemaError(
            f"{where}: via {r.via!r} is no reference field of {target.message.name} "
            f"to {spec.message.name}"
        )
    limit = r.limit or DEFAULT_LIMIT
    if not 0 < limit <= MAX_LIMIT:
        raise SchemaError(f"{where}: limit {r.limit} is not between 1 and {MAX_LIMIT}")
    if r.truncated:
        _check_flag(spec, f, r.truncated)
    return RelatedSpec(f.name, target, True, r.via, limit, r.order_by, r.truncated)


def _check_flag(spec: ResourceSpec, related_field: FieldDescriptor, name: str) -> None:
    flag = spec.message.fields_by_name.get(name)
    if (
        flag is None
        or flag is related_field
        or name in STANDARD_FIELDS
        or flag.type != FieldDescriptor.TYPE_BOOL
        or flag.is_repeated
        or flag.GetOptions().HasExtension(_FIELD)
    ):
        raise SchemaError(
            f"{spec.message.full_name}.{related_field.name}: truncated {name!r} must name a "
            f"bool field of {spec.message.name} with no options"
        )


def _field(spec: ResourceSpec, name: str) -> FieldSpec | None:
    try:
        return spec.field(name)
    except KeyError:
        return None


def _refers_to(f: FieldSpec, target: ResourceSpec) -> bool:
    return f.reference in (target.message.name, target.message.full_name)
