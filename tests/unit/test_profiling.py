"""Query shapes, plans and statement statistics: the pure logic under GetQueryProfile and
RecommendIndexes (the servers' answers are tested end to end)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table

from repositories.base import Repository
from repositories.entity import Entity
from repositories.filtering import Filters, compile_filter
from repositories.plans import Access, Plan, TableIndex, _postgresql, _sqlite
from repositories.profiler import StatementStats
from repositories.tables import standard_columns
from server.index_advice import _verdict
from server.query_shapes import EntityShapes, QueryShapes, Shape, Term, indexable

pytestmark = pytest.mark.unit

notes = Table(
    "profiling_notes",
    MetaData(),
    *standard_columns(),
    Column("title", String(100)),
    Column("rank", Integer),
    Column("tags", JSON),
    Column("doc", JSON),
)


class NoteRepository(Repository):
    entity = Entity(
        "note",
        notes,
        filterable={"title": "string", "rank": "int", "tags": "json_array", "doc": "json_object"},
    )


def shapes() -> EntityShapes:
    entity = NoteRepository.entity
    return QueryShapes().entity("test.Note", NoteRepository, Filters(entity.filter_fields()))


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ('title = "secret"', "title = ?"),
        ("rank > 3 rank <= -7.5e2", "rank > ? AND rank <= ?"),
        ('title = "Ann*"', 'title = "?*"'),
        ('title = "*son" OR title = "a\\*b"', 'title = "*?" OR title = ?'),
        ("rank IN (1, 2, 3) AND title != null", "rank IN (?) AND title != null"),
        ('-(title : "x" OR rank = 1) NOT tags:"y"', "NOT (title : ? OR rank = ?) AND NOT tags : ?"),
        (
            'doc.a.b = true AND create_time < "2026-01-01T00:00:00Z"',
            "doc.a.b = ? AND create_time < ?",
        ),
        ("  ", ""),
    ],
)
def test_a_filter_shape_keeps_its_structure_and_hides_its_values(text: str, shape: str) -> None:
    found = shapes().filter_shape(text)

    assert found.text == shape
    if text.strip():
        # The stand-in filter compiles over the same fields, and has the same shape.
        assert compile_filter(found.representative, shapes().fields) is not None
        assert shapes().filter_shape(found.representative).text == shape


# Values no field name holds: an upper-case Q starts each.
_word = st.text("abcxyz019", min_size=1, max_size=6).map(lambda text: "Q" + text)
_leaf = st.one_of(
    st.builds(lambda op, v: f'title {op} "{v}"', st.sampled_from(["=", "!=", ":", "=~"]), _word),
    st.builds(lambda v: f'title = "{v}*"', _word),
    st.builds(
        lambda op, n: f"rank {op} {n}", st.sampled_from(["=", "<", ">="]), st.integers(-9, 9)
    ),
    st.builds(lambda v, w: f'rank IN ({len(v)}, {len(w)}) AND tags : "{v}"', _word, _word),
    st.builds(lambda key, v: f'doc.{key.lower()} = "{v}"', _word, _word),
    st.just("title = null"),
)
_filters = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a} AND {b}", inner, inner),
        st.builds(lambda a, b: f"{a} OR {b}", inner, inner),
        st.builds(lambda a: f"NOT ({a})", inner),
        st.builds(lambda a, b: f"({a}) {b}", inner, inner),
    ),
    max_leaves=6,
)


@given(_filters)
def test_no_value_survives_in_a_shape_and_stand_ins_keep_it(text: str) -> None:
    note = shapes()
    found = note.filter_shape(text)

    assert "Q" not in found.text
    assert "Q" not in found.representative
    assert compile_filter(found.representative, note.fields) is not None
    assert note.filter_shape(found.representative).text == found.text


def test_stand_ins_are_valid_for_each_kind_and_never_the_clients_values() -> None:
    found = shapes().filter_shape(
        'id = "6f1c6c8e-2f4e-4a53-9c0e-0c2b7f6f7a1b" AND update_time >= "2031-05-06T07:08:09Z" '
        'AND title = "Bo*" AND rank = 42'
    )

    assert found.representative == (
        'id = "00000000-0000-0000-0000-000000000000" AND update_time >= "2000-01-01T00:00:00Z" '
        'AND title = "x*" AND rank = 0'
    )


def test_only_comparisons_joined_by_and_are_conjuncts() -> None:
    found = shapes().filter_shape('rank = 1 AND (title = "a" OR rank > 2) AND NOT title = null')

    assert found.conjuncts == (Term("rank", "="),)
    assert [t.field for t in found.terms] == ["rank", "title", "rank", "title"]


@pytest.mark.parametrize(
    ("term", "kind", "served"),
    [
        (Term("rank", "="), "int", True),
        (Term("rank", "IN"), "int", True),
        (Term("rank", ">="), "int", True),
        (Term("title", "= null"), "string", True),
        (Term("rank", "!="), "int", False),
        (Term("title", ":"), "string", False),
        (Term("title", "=~"), "string", False),
        (Term("title", "=", pattern=True), "string", False),
        (Term("tags", ":"), "json_array", False),
        (Term("doc.a", "="), "json_object", False),
    ],
)
def test_which_comparisons_a_btree_index_narrows(term: Term, kind: Any, served: bool) -> None:
    assert indexable(term, kind) is served


def test_shapes_are_bounded_and_the_least_called_make_room() -> None:
    from server import context

    recorded = QueryShapes(keep=2)
    note = recorded.entity(
        "test.Note", NoteRepository, Filters(NoteRepository.entity.filter_fields())
    )
    token = context.bind(context.RequestContext(tenant="t1", request_id="r"))
    try:
        for _ in range(3):
            note.record("List", "rank = 1", "")
        note.record("Count", "rank = 1")
        note.record("Count", 'title = "x"')  # replaces the Count seen once
    finally:
        context.unbind(token)

    assert [(s.method, s.filter.text, s.calls) for s in recorded.most_called(10)] == [
        ("List", "rank = ?", 3),
        ("Count", "title = ?", 1),
    ]
    assert recorded.most_called(10)[0].order_by == "create_time, id"


def test_statement_statistics_are_bounded_and_keep_what_costs_most() -> None:
    stats = StatementStats(keep=2)
    stats.add("SELECT a\n FROM t WHERE x = $1", 0.5)
    stats.add("SELECT a FROM t WHERE x = $1", 1.5)
    stats.add("SELECT b FROM t", 0.1)
    stats.add("SELECT c FROM t", 0.2)  # replaces the cheapest

    top = stats.top(5)
    assert [(t.sql, t.calls, t.total, t.longest) for t in top] == [
        ("SELECT a FROM t WHERE x = $1", 2, 2.0, 1.5),
        ("SELECT c FROM t", 1, 0.2, 0.2),
    ]
    assert stats.top(1) == top[:1]


def test_a_postgresql_plan_names_its_scans_and_their_columns_without_literals() -> None:
    plan = {
        "Node Type": "Limit",
        "Plans": [
            {
                "Node Type": "Bitmap Heap Scan",
                "Relation Name": "tasks",
                "Plans": [
                    {
                        "Node Type": "BitmapAnd",
                        "Plans": [
                            {
                                "Node Type": "Bitmap Index Scan",
                                "Index Name": "ix_a",
                                "Index Cond": "((tenant_id)::text = 'rank-title'::text)",
                            },
                            {
                                "Node Type": "Bitmap Index Scan",
                                "Index Name": "ix_b",
                                "Index Cond": "(rank = 3)",
                            },
                        ],
                    }
                ],
            },
            {"Node Type": "Seq Scan", "Relation Name": "other"},
        ],
    }

    accesses = list(_postgresql(plan, "tasks"))

    assert [(a.how, a.index) for a in accesses] == [
        ("Bitmap Heap Scan on tasks using ix_a", "ix_a"),
        ("Bitmap Heap Scan on tasks using ix_b", "ix_b"),
    ]
    # The tenant's value names no column; the condition's words are what may be columns.
    assert "rank" not in accesses[0].columns
    assert "tenant_id" in accesses[0].columns
    assert "rank" in accesses[1].columns
    assert [
        a.how for a in _postgresql({"Node Type": "Seq Scan", "Relation Name": "tasks"}, "tasks")
    ] == ["Seq Scan on tasks"]


def test_a_sqlite_plan_names_its_scans_and_their_columns() -> None:
    details = [
        "SEARCH tasks USING INDEX ix_tasks_tenant_rank (tenant_id=? AND rank>?)",
        "SCAN tasks USING COVERING INDEX ix_tasks_tenant_create_time",
        "SCAN other",
        "USE TEMP B-TREE FOR ORDER BY",
    ]

    accesses = list(_sqlite(details, "tasks"))

    assert [a.index for a in accesses] == ["ix_tasks_tenant_rank", "ix_tasks_tenant_create_time"]
    assert {"tenant_id", "rank"} <= accesses[0].columns
    assert accesses[1].columns == frozenset()
    assert [a.how for a in accesses] == details[:2]


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        # rank is in the index's condition, but the index sorts by title first: no narrowing.
        ("rank > 1", "NEEDS_INDEX"),
        ('NOT title = "a" AND rank > 1', "NEEDS_INDEX"),
        ('title = "a" OR rank > 1', "NOT_INDEXABLE"),
        ('title = "a" AND rank > 1', "SERVED"),
    ],
)
def test_an_index_serves_a_shape_only_by_a_column_every_matching_row_is_compared_on(
    text: str, verdict: str
) -> None:
    entity = shapes()
    index = "ix_profiling_notes_tenant_title_rank"
    existing = [TableIndex(index, ("tenant_id", "title", "rank"))]
    scan = f"Index Scan using {index} on profiling_notes"
    plan = Plan((Access(scan, index, frozenset({"tenant_id", "title", "rank"})),), 10.0)
    shape = Shape(entity, "Count", entity.filter_shape(text), "")

    assert _verdict(shape, plan, existing).verdict == verdict
