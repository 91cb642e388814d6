"""The indexes a schema declares serve the filters they are for, on PostgreSQL: the plans
of the queries a List and a Count run (the filter, the tenant, live rows; a List's order
and limit) read the index. tests/schemas/tasks gives Task a GIN index on `tags` (a filterable
repeated field), one on `payload` (`searchable`), and an expression index on the path
`payload.score` (`indexes: [{fields: ["payload.score"]}]`).

Each statement is prepared as the server's driver prepares it, values as parameters, and
planned both ways PostgreSQL plans a prepared statement: for its values (its first runs)
and generically (once it has run a few times, if that looks no dearer): the List's page
query the first way, the Count's the second (with no value to go by, a generic plan of
the page query rightly walks the order's index and stops at the limit). A generic plan
sees no value, so only a path written out in the SQL as the index's own expression can
match the index: that is why conditions on an indexed path do not bind its keys.
Sequential scans are turned off in the test's own transaction, so that the plan shows
whether an index can serve the condition at all rather than what a small table's
statistics make cheapest; the table holds enough rows, of two tenants, that the
indexes are real choices all the same. And a path index is planned and applied on a
table that exists, on SQLite too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories.database import Database, create_engine
from repositories.filtering import Filters
from repositories.migrate import locked, upgrade
from repositories.scope import TENANT_PARAM
from schema.declared import Declared, declare
from schema.loading import load
from schema.migrations import plan
from tests.integration.test_schema_migrations import evolve, index_names
from tests.pgbouncer import fresh_database

pytestmark = pytest.mark.integration

TASKS = Path(__file__).resolve().parents[1] / "schemas" / "tasks"
ROWS = 3000
TENANTS = ("t-indexes-a", "t-indexes-b")


def task_repository(declared: Declared) -> Any:
    return declared.resources["acme.tasks.v1.Task"].repository


@pytest.fixture(scope="module")
async def seeded() -> AsyncIterator[tuple[AsyncEngine, Declared]]:
    declared = declare(load(TASKS))
    async with fresh_database() as url:
        engine = create_engine(url)
        await upgrade(engine, declared=declared)
        project_repo = declared.resources["acme.tasks.v1.Project"].repository
        for tenant in TENANTS:
            async with Database(engine).unit_of_work(tenant) as uow:
                project = await uow.repository(project_repo).create({"name": "p"})
                tasks = uow.repository(task_repository(declared))
                for start in range(0, ROWS, 500):
                    await tasks.create_many(
                        [
                            {
                                "project_id": project["id"],
                                "title": f"task {n}",
                                "tags": [f"g{n % 250}", "common"],
                                "payload": {
                                    "score": n % 1000,
                                    "workspace": f"w{n % 200}",
                                    "labels": [f"l{n % 300}"],
                                },
                            }
                            for n in range(start, start + 500)
                        ]
                    )
                await uow.commit()
        # As autovacuum would: statistics, and the GIN indexes' pending entries merged
        # (until then the planner rightly counts a scan of the pending list too).
        async with engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM ANALYZE tasks"))
        try:
            yield engine, declared
        finally:
            await engine.dispose()


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += nodes(child)
    return found


def literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


async def plan_of(
    engine: AsyncEngine, declared: Declared, filter_text: str, *, generic: bool
) -> list[Any]:
    """The plan nodes of ListTasks' first page (`generic`: of CountTasks) with
    `filter_text`, as tenant A: the statement prepared as the server's driver prepares it,
    and planned for its values (as PostgreSQL plans a prepared statement's first runs) or
    `generic`ally (as it may plan one that has run a few times)."""
    repository = task_repository(declared)
    where = Filters(repository.entity.filter_fields()).compile(filter_text)
    # A unit that writes is a transaction (a read-only one runs in autocommit), which
    # SET LOCAL needs; it writes nothing.
    async with Database(engine).unit_of_work(TENANTS[0]) as uow:
        repo = uow.repository(repository)
        # The statements Count and a List's first page of 50 run.
        stmt = repo.count_statement(where) if generic else repo.page_statement(50, where=where)
        compiled = stmt.compile(dialect=engine.dialect)
        params = {**compiled.params, TENANT_PARAM: TENANTS[0]}
        values = ", ".join(literal(params[name]) for name in compiled.positiontup or ())
        conn = repo._conn
        mode = "force_generic_plan" if generic else "force_custom_plan"
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        await conn.exec_driver_sql(f"SET LOCAL plan_cache_mode = {mode}")
        await conn.exec_driver_sql(f"PREPARE listed AS {compiled}")
        explained = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) EXECUTE listed({values})")
        plan = explained.scalar_one()
        await conn.exec_driver_sql("DEALLOCATE listed")
        rows, _ = await repo.page(50, where=where)
    assert rows, f"{filter_text} matches rows of the tenant"
    assert all(row["tenant_id"] == TENANTS[0] for row in rows)
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return nodes(plan[0]["Plan"])


def indexes_read(found: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Index name -> its index conditions, for every index the plan reads."""
    read: dict[str, list[str]] = {}
    for node in found:
        if "Index Name" in node:
            read.setdefault(node["Index Name"], []).append(node.get("Index Cond", ""))
    return read


@pytest.mark.parametrize(
    ("filter_text", "index", "scans"),
    [
        ('tags:"g7"', "ix_tasks_tags", 1),
        # Overlap: either tag (a BitmapOr of two scans).
        ('tags:"g7" OR tags:"g8"', "ix_tasks_tags", 2),
        # Containment: both tags.
        ('tags:"g7" AND tags:"common"', "ix_tasks_tags", 1),
        ('payload.workspace = "w7"', "ix_tasks_payload", 1),
        ('payload.workspace IN ("w7", "w8")', "ix_tasks_payload", 2),
        # `:` into an array inside the Struct: element, or the value itself.
        ('payload.labels:"l7"', "ix_tasks_payload", 2),
    ],
)
@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
async def test_containment_filters_read_the_gin_index(
    seeded: tuple[AsyncEngine, Declared], filter_text: str, index: str, scans: int, generic: bool
) -> None:
    engine, declared = seeded
    read = indexes_read(await plan_of(engine, declared, filter_text, generic=generic))
    assert index in read, (filter_text, read)
    assert len(read[index]) >= scans, (filter_text, read)
    assert all("@>" in cond for cond in read[index]), read


@pytest.mark.parametrize(
    "filter_text",
    [
        "payload.score > 990",
        "payload.score >= 3 AND payload.score < 5",
        'payload.score <= 2.5 AND title = "task 1"',
    ],
)
@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
async def test_a_path_range_reads_the_path_index(
    seeded: tuple[AsyncEngine, Declared], filter_text: str, generic: bool
) -> None:
    engine, declared = seeded
    read = indexes_read(await plan_of(engine, declared, filter_text, generic=generic))
    conditions = read.get("ix_tasks_tenant_payload_score")
    assert conditions, (filter_text, read)
    assert any("payload -> 'score'" in cond for cond in conditions), conditions
    assert any("tenant_id" in cond for cond in conditions), conditions


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
        yield engine
        await engine.dispose()
        return
    async with fresh_database() as url:
        engine = create_engine(url)
        yield engine
        await engine.dispose()


async def test_a_path_index_is_planned_and_applied_on_a_table_that_exists(
    fresh: AsyncEngine, tmp_path: Path
) -> None:
    await upgrade(fresh, declared=declare(load(TASKS)))
    evolved = evolve(
        tmp_path,
        (
            "task.proto",
            'fields: ["payload.score"]',
            'fields: ["payload.score"]\n      },\n'
            '      {\n        fields: ["payload.depth.level desc"]',
        ),
    )

    async with fresh.connect() as conn:
        planned = await conn.run_sync(plan, evolved)
    name = "ix_tasks_tenant_payload_depth_level"
    assert [step.summary for step in planned.steps] == [f"tasks: create index {name}"]
    (ddl,) = planned.statements
    if fresh.dialect.name == "postgresql":
        assert "((payload -> 'depth') -> 'level') DESC" in ddl
    else:
        assert 'json_extract(payload, \'$."depth"."level"\')' in ddl

    await upgrade(fresh, declared=evolved)

    assert name in await index_names(fresh, "tasks")
    async with fresh.connect() as conn:
        again = await conn.run_sync(plan, evolved)
    assert not again.changes
    # Planned against the record, the table is as declared: nothing more to do.
    assert await locked(fresh, lambda c: plan(c, evolved).steps) == ()
