"""What the database plans for a repository's statement, read from EXPLAIN (without ANALYZE:
nothing runs), and which indexes a table has: for AdminService.RecommendIndexes.

A plan is reduced to how it reads one table's rows: its access paths (PostgreSQL's Seq
Scan, Index Scan, Bitmap Heap Scan...; SQLite's SCAN and SEARCH), each with the index it
uses and the columns its index condition names. Conditions are read for column names only:
their literals (the tenant, the values EXPLAINed) are dropped, and never kept or shown.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from repositories.base import Repository

# A quoted literal in a PostgreSQL condition: '...' with '' for a quote inside.
_LITERAL = re.compile(r"'(?:[^']|'')*'")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# SQLite's EXPLAIN QUERY PLAN: "SEARCH tasks USING INDEX ix_... (tenant_id=? AND x>?)".
_SQLITE_STEP = re.compile(r"(SCAN|SEARCH) (\w+)\b(.*)")
_SQLITE_INDEX = re.compile(r"USING (?:COVERING )?INDEX (\w+)|USING (?:INTEGER )?PRIMARY KEY")
_SQLITE_CONDITION = re.compile(r"\(([^()]*)\)\s*$")


@dataclass(frozen=True)
class Access:
    """One way the plan reads the table's rows."""

    how: str  # "Seq Scan on tasks", "Index Scan using ix_t on tasks", "SCAN tasks"
    index: str | None
    columns: frozenset[str]  # the words of its index condition that may be column names


@dataclass(frozen=True)
class Plan:
    accesses: tuple[Access, ...]
    cost: float  # PostgreSQL's estimated total cost; 0 on SQLite, which gives none

    def describe(self) -> str:
        return "; ".join(access.how for access in self.accesses)


@dataclass(frozen=True)
class TableIndex:
    name: str
    columns: tuple[str | None, ...]  # None for an expression


async def explain(repo: Repository, stmt: Select[Any]) -> Plan:
    """How the database would read `repo`'s table to run `stmt`, for `repo`'s tenant."""
    result = await repo._execute(repo.scope.explain(stmt))
    table = repo.table.name
    if repo.dialect == "postgresql":
        document = result.scalar_one()
        if isinstance(document, str):
            document = json.loads(document)
        top = document[0]["Plan"]
        return Plan(tuple(_postgresql(top, table)), float(top.get("Total Cost", 0.0)))
    details = [str(row[-1]) for row in result]
    return Plan(tuple(_sqlite(details, table)), 0.0)


def indexes(conn: Connection, table: str) -> list[TableIndex]:
    """The table's indexes, its primary key's first (run with AsyncConnection.run_sync)."""
    found = inspect(conn)
    key = found.get_pk_constraint(table)
    listed = [TableIndex(key.get("name") or "PRIMARY KEY", tuple(key["constrained_columns"]))]
    with warnings.catch_warnings():
        # SQLite's expression indexes (lower(email)) cannot be reflected; they serve no
        # filter (which compares case-sensitively) anyway.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", sa_exc.SAWarning)
        for index in found.get_indexes(table):
            listed.append(TableIndex(str(index["name"]), tuple(index["column_names"])))
    return listed


def _postgresql(node: Mapping[str, Any], table: str) -> Iterator[Access]:
    if node.get("Relation Name") == table:
        kind = str(node["Node Type"])
        if kind == "Bitmap Heap Scan":
            for scan in _bitmap_scans(node):
                index = str(scan["Index Name"])
                how = f"Bitmap Heap Scan on {table} using {index}"
                yield Access(how, index, _columns(scan.get("Index Cond", "")))
            return
        named = node.get("Index Name")
        how = f"{kind} using {named} on {table}" if named else f"{kind} on {table}"
        yield Access(how, named, _columns(node.get("Index Cond", "")))
    for child in node.get("Plans", ()):
        yield from _postgresql(child, table)


def _bitmap_scans(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for child in node.get("Plans", ()):
        if child.get("Node Type") == "Bitmap Index Scan":
            yield child
        else:  # BitmapAnd, BitmapOr
            yield from _bitmap_scans(child)


def _columns(condition: str) -> frozenset[str]:
    return frozenset(_WORD.findall(_LITERAL.sub("", condition)))


def _sqlite(details: list[str], table: str) -> Iterator[Access]:
    for detail in details:
        step = _SQLITE_STEP.match(detail)
        if step is None or step.group(2) != table:
            continue
        using = _SQLITE_INDEX.search(step.group(3))
        index = None if using is None else using.group(1) or "PRIMARY KEY"
        condition = _SQLITE_CONDITION.search(step.group(3)) if step.group(1) == "SEARCH" else None
        yield Access(detail, index, _columns(condition.group(1) if condition else ""))
