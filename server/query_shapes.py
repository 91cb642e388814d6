"""The shapes of the List, Count, Aggregate and Rank queries clients run: what
AdminService.RecommendIndexes EXPLAINs.

A shape is what a query asks, without its values: the resource, the method, the AIP-160
filter with `?` for each value, and the order. StandardMethods records each call's shape
(`EntityShapes.record`, one call after the request is checked); shapes are counted over
every tenant, at most `QueryShapes.keep` of them, the least called making room for a new
one. Kept with each shape and never shown: a representative filter (the same text with
values chosen here, not a client's) and the latest caller's tenant, whose share of the
table the planner then estimates when the shape is EXPLAINed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import lark
from sqlalchemy import ColumnElement, Table

from repositories.base import Repository
from repositories.filtering import FilterField, FilterKind, Filters
from repositories.ordering import Order, parse_order_by
from server import context

# Tokens that hold a client's value; `null` is not one (`= null` is its own comparison).
_VALUES = frozenset({"STRING", "NUMBER", "TRUE", "FALSE"})
# Stand-ins the representative filter gives each kind of field: valid, and no one's data.
_STAND_INS: Mapping[FilterKind, str] = {
    "timestamp": '"2000-01-01T00:00:00Z"',
    "uuid": '"00000000-0000-0000-0000-000000000000"',
}
# Comparisons a B-tree index narrows: equality first in an index, then ranges.
EQUALITY = frozenset({"=", "IN", "= null"})
RANGE = frozenset({"<", "<=", ">", ">="})
# Fields whose comparisons a B-tree index does not narrow (GIN's business: `searchable`).
_UNINDEXED_KINDS = frozenset({"json_array", "json_object"})


@dataclass(frozen=True)
class Term:
    """One comparison of a filter: `priority > ?` is Term("priority", ">")."""

    field: str
    operator: str  # "=", "!=", "<", ..., ":", "=~", "IN", "= null", "!= null"
    pattern: bool = False  # a string with wildcards: `title = "?*"`


@dataclass(frozen=True)
class FilterShape:
    text: str  # with placeholders: shown
    representative: str  # with stand-in values: EXPLAINed, never shown
    conjuncts: tuple[Term, ...]  # the comparisons every matching row passes (AND, not OR/NOT)
    terms: tuple[Term, ...]  # every comparison


@dataclass
class Shape:
    """One shape of one resource's queries, and how often it ran."""

    entity: EntityShapes
    method: str  # "List", "Count" (other methods are EXPLAINed as a Count of their filter)
    filter: FilterShape
    order_by: str  # "create_time desc, id"; "" for methods without an order
    calls: int = 0
    tenant: str = field(default="", repr=False)  # the latest caller's: for EXPLAIN only

    @property
    def order(self) -> Order:
        e = self.entity
        return parse_order_by(self.order_by, e.sort_columns, e.default_order)


class QueryShapes:
    """Every resource's shapes, at most `keep` of them."""

    def __init__(self, keep: int = 500) -> None:
        self.keep = keep
        self._entities: dict[str, EntityShapes] = {}
        self._shapes: dict[tuple[str, str, str, str], Shape] = {}

    def entity(self, resource: str, repository: type[Repository], filters: Filters) -> EntityShapes:
        """The recorder for one resource (one per resource, however often asked)."""
        found = self._entities.get(resource)
        if found is None:
            found = self._entities[resource] = EntityShapes(self, resource, repository, filters)
        return found

    def most_called(self, count: int) -> list[Shape]:
        return sorted(self._shapes.values(), key=lambda s: s.calls, reverse=True)[:count]

    def _count(self, entity: EntityShapes, method: str, shape: FilterShape, order: str) -> None:
        key = (entity.resource, method, shape.text, order)
        found = self._shapes.get(key)
        if found is None:
            if len(self._shapes) >= self.keep:
                least = min(self._shapes, key=lambda k: self._shapes[k].calls)
                del self._shapes[least]
            found = self._shapes[key] = Shape(entity, method, shape, order)
        found.calls += 1
        found.tenant = context.tenant()


class EntityShapes:
    """Records the shapes of one resource's queries; filter and order texts already
    checked by the call (`Filters.compile`, `parse_order_by`)."""

    def __init__(
        self,
        shapes: QueryShapes,
        resource: str,
        repository: type[Repository],
        filters: Filters,
    ) -> None:
        self._shapes = shapes
        self.resource = resource
        self.repository = repository
        self._filters = filters
        self.fields: Mapping[str, FilterField] = filters.fields
        entity = repository.entity
        self.table: Table = entity.table
        self.sort_columns: dict[str, ColumnElement[Any]] = entity.sort_columns()
        self.default_order = entity.default_order
        # As Filters does: clients send the same few texts again and again.
        self._filter = lru_cache(maxsize=256)(self.filter_shape)
        self._order = lru_cache(maxsize=64)(self._order_shape)

    def record(self, method: str, filter: str, order_by: str | None = None) -> None:
        """Counts one call of `method` with this filter (and, for List, order_by)."""
        order = "" if order_by is None else self._order(order_by)
        self._shapes._count(self, method, self._filter(filter), order)

    def kind(self, name: str) -> FilterKind | None:
        """The kind of the field a filter names (`payload.a.b`: payload's)."""
        found = self.fields.get(name.partition(".")[0])
        return None if found is None else found.kind

    def filter_shape(self, text: str) -> FilterShape:
        """The shape of a filter text that compiles over `fields`."""
        # Parsed once for the call's own compile (Filters.tree); a new text is parsed here.
        tree = self._filters.tree(text)
        if tree is None:
            return FilterShape("", "", (), ())
        return FilterShape(
            _render(tree, None),
            _render(tree, self),
            tuple(_term(node) for node in _conjuncts(tree)),
            tuple(_term(node) for node in _comparisons(tree)),
        )

    def _order_shape(self, text: str) -> str:
        order = parse_order_by(text, self.sort_columns, self.default_order)
        return ", ".join(key.name + (" desc" if key.descending else "") for key in order)


# ---------------------------------------------------------------- filter trees


def _tokens(node: lark.Tree[lark.Token]) -> list[lark.Token]:
    return [child for child in node.children if isinstance(child, lark.Token)]


def _trees(node: lark.Tree[lark.Token]) -> list[lark.Tree[lark.Token]]:
    return [child for child in node.children if isinstance(child, lark.Tree)]


def _render(node: lark.Tree[lark.Token], stand_ins: EntityShapes | None) -> str:
    """The filter as text again, each value a placeholder (`stand_ins` None) or a stand-in
    for its field. AND, OR, NOT and parentheses keep their places, so the text parses to
    the same tree: `a b` comes back as `a AND b`, `-a` as `NOT a`."""
    rule = str(node.data)
    inner = [_render(child, stand_ins) for child in _trees(node)]
    if rule == "all":
        return " AND ".join(inner)
    if rule == "any":
        return " OR ".join(inner)
    if rule == "negation":
        return "NOT " + inner[0]
    if rule == "group":
        return f"({inner[0]})"
    tokens = _tokens(node)
    name = str(tokens[0]) if tokens else ""
    if rule == "membership":
        return f"{name} IN ({_value(tokens[1], name, stand_ins)})"
    # A restriction, or a rule this module does not know: its parts in order, values hidden.
    return " ".join(
        _render(child, stand_ins)
        if isinstance(child, lark.Tree)
        else _value(child, name, stand_ins)
        if child.type in _VALUES
        else str(child)
        for child in node.children
    )


def _value(token: lark.Token, name: str, stand_ins: EntityShapes | None) -> str:
    segments = _segments(str(token)) if token.type == "STRING" else None
    if stand_ins is None:
        if segments is not None and len(segments) > 1:
            return '"' + "*".join("?" if part else "" for part in segments) + '"'
        return "?"
    kind = stand_ins.kind(name)
    if token.type == "NUMBER":
        return "0"
    if token.type in ("TRUE", "FALSE"):
        return "true"
    if kind is not None and kind in _STAND_INS:
        return _STAND_INS[kind]
    return '"' + "*".join("x" if part else "" for part in segments or ("x",)) + '"'


def _segments(quoted: str) -> list[bool]:
    """Whether each wildcard-separated part of a quoted string has text: `"a*"` is
    [True, False]. Escaped characters (`\\*` too) are text."""
    parts: list[bool] = [False]
    chars = iter(quoted[1:-1])
    for char in chars:
        if char == "*":
            parts.append(False)
            continue
        if char == "\\":
            next(chars, None)
        parts[-1] = True
    return parts


def _conjuncts(node: lark.Tree[lark.Token]) -> Iterator[lark.Tree[lark.Token]]:
    """The comparisons every matching row passes: those joined by AND alone."""
    rule = str(node.data)
    children = _trees(node)
    if rule in ("all", "group") or (rule == "any" and len(children) == 1):
        for child in children:
            yield from _conjuncts(child)
    elif rule in ("restriction", "membership"):
        yield node


def _comparisons(node: lark.Tree[lark.Token]) -> Iterator[lark.Tree[lark.Token]]:
    if str(node.data) in ("restriction", "membership"):
        yield node
    for child in _trees(node):
        yield from _comparisons(child)


def _term(node: lark.Tree[lark.Token]) -> Term:
    tokens = _tokens(node)
    name = str(tokens[0])
    if str(node.data) == "membership":
        return Term(name, "IN")
    operator, value = str(tokens[1]), tokens[-1]
    if value.type == "NULL":
        return Term(name, f"{operator} null")
    pattern = value.type == "STRING" and len(_segments(str(value))) > 1
    return Term(name, operator, pattern)


def indexable(term: Term, kind: FilterKind | None) -> bool:
    """Whether a B-tree index on the term's column narrows it."""
    if kind is None or kind in _UNINDEXED_KINDS or term.pattern:
        return False
    return term.operator in EQUALITY or term.operator in RANGE
