"""SQL pieces that filters build conditions from, the same on PostgreSQL and SQLite.

`PerDialect` holds an expression rendered one way on SQLite and another everywhere
else; both forms are built up front with their own bound parameters. `match` is
case-sensitive (or ASCII-folded) wildcard matching: LIKE with ESCAPE on PostgreSQL,
GLOB on SQLite, whose LIKE ignores ASCII case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, String, bindparam, func, not_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal


class PerDialect(ColumnElement[Any]):
    """An expression rendered as `sqlite` on SQLite and as `default` everywhere else.

    Its type is the default form's. Only the form for the executing dialect is
    rendered, in statements and in DDL (an index on one) alike.
    """

    __visit_name__ = "repogate_per_dialect"
    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy's own declaration style
        ("default", InternalTraversal.dp_clauseelement),
        ("sqlite", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, default: ColumnElement[Any], sqlite: ColumnElement[Any]) -> None:
        self.default = default
        self.sqlite = sqlite
        self.type = default.type
        # A condition stands as it is in WHERE, not as `(...) = 1` on SQLite, whose
        # planner would then not see the comparison inside (an expression index).
        self._is_implicitly_boolean = sqlite._is_implicitly_boolean

    @property
    def _from_objects(self) -> list[Any]:
        return list(self.default._from_objects)

    def _negate(self) -> ColumnElement[Any]:
        return PerDialect(not_(self.default), not_(self.sqlite))


@compiles(PerDialect)
def _render_default(element: PerDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.default, **kw)})"


@compiles(PerDialect, "sqlite")
def _render_sqlite(element: PerDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.sqlite, **kw)})"


def bind(value: Any, column: ColumnElement[Any] | None = None) -> ColumnElement[Any]:
    """An anonymous, unique parameter; typed by `column` so that its bind processing
    (UTC timestamps, UUIDs on SQLite) applies, else a string."""
    return bindparam(None, value, type_=column.type if column is not None else String())


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def glob_escape(text: str) -> str:
    # GLOB has no ESCAPE clause; a metacharacter in brackets stands for itself.
    return "".join(f"[{char}]" if char in "*?[" else char for char in text)


def match(column: ColumnElement[Any], segments: Sequence[str], fold: bool) -> PerDialect:
    """`column` against a pattern: `segments` joined by any-text wildcards; `fold`
    compares lower() of both sides."""
    like = bind("%".join(like_escape(part) for part in segments))
    glob = bind("*".join(glob_escape(part) for part in segments))
    if fold:
        lowered = func.lower(column)
        return PerDialect(
            lowered.like(func.lower(like), escape="\\"),
            lowered.op("GLOB", is_comparison=True)(func.lower(glob)),
        )
    return PerDialect(column.like(like, escape="\\"), column.op("GLOB", is_comparison=True)(glob))
