"""EXPLAIN as a statement that keeps its inner statement's bound parameters."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable, Generative
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement


class Explain(Generative, Executable, ClauseElement):
    """The plan, not the rows: `EXPLAIN (FORMAT JSON) <select>` on PostgreSQL (one JSON
    document), `EXPLAIN QUERY PLAN <select>` on SQLite (a row per step)."""

    inherit_cache = False

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement


@compiles(Explain, "postgresql")
def _explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + _inner(element, compiler, **kw)


@compiles(Explain, "sqlite")
def _explain_query_plan(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN QUERY PLAN " + _inner(element, compiler, **kw)


def _inner(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    # Compiled as a nested statement, as INSERT ... SELECT compiles its SELECT: its
    # columns do not become the result's, so the plan's rows are not read as them.
    compiler.stack.append(
        {"correlate_froms": set(), "asfrom_froms": set(), "selectable": element.statement}
    )
    try:
        return compiler.process(element.statement, **kw)
    finally:
        compiler.stack.pop()
