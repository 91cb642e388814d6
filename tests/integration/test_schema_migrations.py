"""A declared schema's tables on fresh databases: created from nothing, evolved on a
database holding rows (additive changes apply, destructive ones are refused and change
nothing), dropped explicitly, and upgraded by several instances at once.

Each evolution is a copy of tests/schemas/tasks under a package of its own: a process
holds one version of a .proto file, and the migrations key on table and column names,
not on the package.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories import change_log
from repositories.database import Database, create_engine
from repositories.errors import AlreadyExists
from repositories.migrate import locked, upgrade
from repositories.tables import schema_history
from schema import snapshot
from schema.declared import Declared, declare
from schema.loading import load
from schema.migrations import Refused, drop, plan
from schema.model import SchemaError
from tests.pgbouncer import fresh_database

pytestmark = pytest.mark.integration

TASKS = Path(__file__).resolve().parents[1] / "schemas" / "tasks"
TASK = "task.proto"
INSTANCES = 4
# SQLAlchemy cannot reflect SQLite's expression indexes (lower(name)); see test_schema.py.
EXPRESSION_INDEX_WARNINGS = [
    "ignore:Skipped unsupported reflection of expression-based index",
    "ignore:autogenerate skipping metadata-specified expression-based index",
]
ASSIGNEE = "  optional string assignee = 17 [(repogate.options.v1.field).filterable = true];\n"
# Comment and Task are resources no more (their messages stay, for the services), and
# the fields showing them as related resources go.
COMMENTS_OF_TASK = """\
  // Its latest 3 live comments, when a read names `comments` in `expand`.
  repeated Comment comments = 31 [(repogate.options.v1.field).related = {
    via: "task_id"
    limit: 3
    order_by: "number desc"
    truncated: "more_comments"
  }];
  bool more_comments = 32;
"""
TASKS_OF_PROJECT = """\
  repeated Task tasks = 30 [(repogate.options.v1.field).related = {
    via: "project_id"
    truncated: "more_tasks"
  }];
  bool more_tasks = 31;
"""
NO_COMMENTS = (
    (
        "comment.proto",
        '  option (repogate.options.v1.resource) = {default_order: "task_id, number"};\n',
        "",
    ),
    (TASK, COMMENTS_OF_TASK, ""),
)
NO_TASKS = (
    (TASK, "  option (repogate.options.v1.resource) = {\n    indexes: [", "  /*\n    indexes: ["),
    (TASK, "    ]\n  };\n", "    ]\n  */\n"),
    (TASK, TASKS_OF_PROJECT, ""),
)
LABEL = """syntax = "proto3";

package acme.tasks.v1;

import "repogate/options/v1/options.proto";

// A new resource, referring to an existing one.
message Label {
  option (repogate.options.v1.resource) = {};

  string id = 1;
  string etag = 2;
  string project_id = 3 [(repogate.options.v1.field) = {
    required: true
    reference: {resource: "Project"}
  }];
  string name = 4 [(repogate.options.v1.field).unique = true];
}
"""


@pytest.fixture(params=["sqlite", "postgresql"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database that has never been migrated; removed afterwards."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    async with fresh_database() as fresh:
        yield fresh


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    created = create_engine(url)
    yield created
    await created.dispose()


def evolve(tmp_path: Path, *edits: tuple[str, str, str], add: str = "") -> Declared:
    """The tasks schema with each (file, old, new) edit made (`old` must be there) and,
    with `add`, a file label.proto; loaded under a package of its own, and declared."""
    package = f"e{uuid.uuid4().hex[:12]}"
    root = tmp_path / package
    directory = root / "acme" / package / "v1"
    directory.mkdir(parents=True)
    sources = {p.name: p.read_text() for p in (TASKS / "acme" / "tasks" / "v1").glob("*.proto")}
    if add:
        sources["label.proto"] = add
    for name, old, new in edits:
        assert old in sources[name], f"{old!r} is not in {name}"
        sources[name] = sources[name].replace(old, new)
    for name, source in sources.items():
        moved = source.replace("package acme.tasks.v1;", f"package acme.{package}.v1;")
        moved = moved.replace('import "acme/tasks/v1/', f'import "acme/{package}/v1/')
        (directory / name).write_text(moved)
    return declare(load(root))


def repository(declared: Declared, message: str) -> Any:
    return declared.resources[declared.schema.resource(message).message.full_name].repository


async def seed(engine: AsyncEngine, declared: Declared, tenant: str) -> dict[str, Any]:
    """A project and a task of `tenant`, created through the declared repositories."""
    async with Database(engine).unit_of_work(tenant) as uow:
        project = await uow.repository(repository(declared, "Project")).create({"name": "Alpha"})
        task = await uow.repository(repository(declared, "Task")).create(
            {"project_id": project["id"], "title": "first", "tags": ["a"], "priority": 4}
        )
        await uow.commit()
    return {"project": project, "task": task}


async def get(engine: AsyncEngine, declared: Declared, message: str, tenant: str, id_: Any) -> Any:
    async with Database(engine).unit_of_work(tenant, read_only=True) as uow:
        return await uow.repository(repository(declared, message)).get(id_)


async def columns(engine: AsyncEngine, table: str) -> dict[str, tuple[str, bool, Any]]:
    """Column name -> (type, nullable, default), as reflected."""
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda c: inspect(c).get_columns(table))
    return {c["name"]: (str(c["type"]), c["nullable"], c["default"]) for c in found}


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def index_names(engine: AsyncEngine, table: str) -> set[str]:
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :t AND sql IS NOT NULL"
        if engine.dialect.name == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE tablename = :t AND indexname NOT LIKE 'pk_%'"
    )
    async with engine.connect() as conn:
        return {row[0] for row in await conn.execute(text(query), {"t": table})}


async def history(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        h = schema_history.c
        rows = await conn.execute(select(h.id, h.digest, h.snapshot, h.statements).order_by(h.id))
        return list(rows.all())


def triggers(conn: Connection) -> set[tuple[str, str]]:
    rows = conn.execute(
        text(
            "SELECT c.relname, t.tgname FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal"
        )
    )
    return {(table, name) for table, name in rows}


def declared_diff(conn: Connection, declared: Declared) -> list[Any]:
    """Alembic's comparison of the database with the declared tables (only those)."""

    def described(name: Any, type_: str, _parents: Any) -> bool:
        return type_ != "table" or name in declared.metadata.tables

    def include(obj: Any, name: Any, type_: str, reflected: bool, compare_to: Any) -> bool:
        ddl_if = getattr(obj, "_ddl_if", None)
        return reflected or ddl_if is None or ddl_if.dialect in (None, conn.dialect.name)

    def differs(_ctx: Any, _inspected: Any, _meta: Any, found: Any, _d: Any, rendered: Any) -> Any:
        # Alembic renders an empty string default as nothing at all; it is ''.
        if rendered == "" and found is not None:
            return re.sub(r"^\(|\)$|::[a-z ]+$", "", found) != "''"
        return None  # Alembic compares

    context = MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "compare_server_default": differs,
            "include_name": described,
            "include_object": include,
        },
    )
    return list(compare_metadata(context, declared.metadata))


async def assert_unchanged(engine: AsyncEngine, before: dict[str, Any]) -> None:
    assert {name: await columns(engine, name) for name in before["columns"]} == before["columns"]
    assert await tables(engine) == before["tables"]
    assert len(await history(engine)) == before["history"]


async def state(engine: AsyncEngine, *table_names: str) -> dict[str, Any]:
    return {
        "columns": {name: await columns(engine, name) for name in table_names},
        "tables": await tables(engine),
        "history": len(await history(engine)),
    }


# ------------------------------------------------------------ from nothing


@pytest.mark.filterwarnings(*EXPRESSION_INDEX_WARNINGS)
async def test_the_example_schema_applies_to_a_fresh_database(
    engine: AsyncEngine, tenant: str
) -> None:
    declared = declare(load(TASKS))
    assert not {"projects", "tasks", "comments"} & await tables(engine)

    await upgrade(engine, declared=declared)

    assert {"projects", "tasks", "comments", "repogate_schema"} <= await tables(engine)
    async with engine.connect() as conn:
        assert await conn.run_sync(declared_diff, declared) == []
    for table in declared.metadata.tables.values():
        made = snapshot.made_on(table, engine.dialect)
        assert await index_names(engine, table.name) == {i.name for i in made}
    (entry,) = await history(engine)
    assert entry.snapshot == snapshot.take(declared, engine.dialect)
    assert entry.digest == snapshot.digest(entry.snapshot)
    assert any(s.startswith("CREATE TABLE tasks") for s in entry.statements)
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            found = await conn.run_sync(triggers)
        events = ("update", "delete", "truncate")
        for table in ("projects", "tasks", "comments"):
            assert {(table, change_log.trigger_name(table, e)) for e in events} <= found
    # The tables work for the declared repositories, unique indexes included.
    rows = await seed(engine, declared, tenant)
    assert (await get(engine, declared, "Task", tenant, rows["task"]["id"]))["title"] == "first"
    with pytest.raises(AlreadyExists):
        async with Database(engine).unit_of_work(tenant) as uow:
            await uow.repository(repository(declared, "Project")).create({"name": "ALPHA"})


async def test_upgrading_again_changes_nothing(engine: AsyncEngine) -> None:
    declared = declare(load(TASKS))
    await upgrade(engine, declared=declared)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        await upgrade(engine, declared=declared)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)

    assert statements, "the listener saw nothing; the check below would be vacuous"
    written = [
        s
        for s in statements
        if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP", "INSERT", "UPDATE"))
    ]
    assert written == []
    assert len(await history(engine)) == 1


# ------------------------------------------------------------ evolving


async def test_additive_changes_apply_and_rows_survive(
    engine: AsyncEngine, tmp_path: Path, tenant: str
) -> None:
    await upgrade(engine, declared=declare(load(TASKS)))
    rows = await seed(engine, declare(load(TASKS)), tenant)
    evolved = evolve(
        tmp_path,
        (
            TASK,
            ASSIGNEE,
            ASSIGNEE
            + "  optional string reviewer = 18;\n"
            + '  int32 estimate = 19 [(repogate.options.v1.field).default = "3"];\n'
            + "  string note = 20;\n",
        ),
        (
            TASK,
            '"priority desc"\n        ]\n      }',
            '"priority desc"\n        ]\n      },\n      {fields: ["title"]}',
        ),
        add=LABEL,
    )

    await upgrade(engine, declared=evolved)

    found = await columns(engine, "tasks")
    assert {"reviewer", "estimate", "note"} <= set(found)
    assert found["reviewer"][1]
    assert not found["estimate"][1]
    assert "labels" in await tables(engine)
    assert "ix_tasks_tenant_title" in await index_names(engine, "tasks")
    assert "uq_labels_tenant_name" in await index_names(engine, "labels")
    # The rows made before read through the new schema, with the new fields' defaults.
    task = await get(engine, evolved, "Task", tenant, rows["task"]["id"])
    assert (task["reviewer"], task["estimate"], task["note"]) == (None, 3, "")
    assert (task["title"], task["tags"], task["priority"]) == ("first", ["a"], 4)
    project = await get(engine, evolved, "Project", tenant, rows["project"]["id"])
    assert project == rows["project"]
    # The new resource refers to the old one within the tenant.
    async with Database(engine).unit_of_work(tenant) as uow:
        label = await uow.repository(repository(evolved, "Label")).create(
            {"project_id": project["id"], "name": "urgent"}
        )
        await uow.commit()
    assert (await get(engine, evolved, "Label", tenant, label["id"]))["name"] == "urgent"
    entries = await history(engine)
    assert len(entries) == 2
    assert entries[-1].snapshot == snapshot.take(evolved, engine.dialect)
    assert any("ADD COLUMN estimate" in s for s in entries[-1].statements)

    await upgrade(engine, declared=evolved)
    assert len(await history(engine)) == 2


async def test_a_longer_string_and_a_new_default_apply(
    engine: AsyncEngine, tmp_path: Path, tenant: str
) -> None:
    await upgrade(engine, declared=declare(load(TASKS)))
    rows = await seed(engine, declare(load(TASKS)), tenant)
    evolved = evolve(
        tmp_path,
        (TASK, "      max_len: 200", "      max_len: 300"),
        (TASK, 'default: "\\"TASK_STATE_OPEN\\""', 'default: "\\"TASK_STATE_DONE\\""'),
    )

    await upgrade(engine, declared=evolved)

    (*_, entry) = await history(engine)
    assert entry.snapshot["tasks"]["columns"]["title"]["type"] == "string VARCHAR(300)"
    assert entry.snapshot["tasks"]["columns"]["state"]["default"] == "'done'"
    found = await columns(engine, "tasks")
    if engine.dialect.name == "postgresql":
        assert found["title"][0] == "VARCHAR(300)"
        assert found["state"][2].startswith("'done'")
        assert len(entry.statements) == 2
    else:
        # SQLite enforces no length, and Repogate writes every column it creates: only the
        # record changes.
        assert entry.statements == []
    # As a process started afterwards: statements asyncpg prepared before on this pool
    # name the old type, and would fail once (docs/schema-migrations.md).
    await engine.dispose()
    async with Database(engine).unit_of_work(tenant) as uow:
        long = await uow.repository(repository(evolved, "Task")).create(
            {"project_id": rows["project"]["id"], "title": "x" * 300}
        )
        await uow.commit()
    assert long["state"] == "done"
    assert (await get(engine, evolved, "Task", tenant, rows["task"]["id"]))["state"] == "open"


async def test_a_new_reference_on_an_existing_table(engine: AsyncEngine, tmp_path: Path) -> None:
    await upgrade(engine, declared=declare(load(TASKS)))
    evolved = evolve(
        tmp_path,
        (
            TASK,
            ASSIGNEE,
            ASSIGNEE
            + "  optional string parent_id = 18 "
            + '[(repogate.options.v1.field).reference = {resource: "Task"}];\n',
        ),
    )
    if engine.dialect.name == "sqlite":
        before = await state(engine, "tasks")
        with pytest.raises(Refused) as refused:
            await upgrade(engine, declared=evolved)
        (refusal,) = refused.value.refusals
        assert refusal.where.startswith("tasks.parent_id (field acme.")
        assert "SQLite cannot add" in refusal.reason
        await assert_unchanged(engine, before)
        return
    await upgrade(engine, declared=evolved)
    async with engine.connect() as conn:
        fks = await conn.run_sync(lambda c: inspect(c).get_foreign_keys("tasks"))
    assert {fk["name"]: fk["constrained_columns"] for fk in fks}["fk_tasks_parent_id"] == [
        "tenant_id",
        "parent_id",
    ]


async def test_dropping_a_field_is_refused_and_changes_nothing(
    engine: AsyncEngine, tmp_path: Path, tenant: str
) -> None:
    await upgrade(engine, declared=declare(load(TASKS)))
    rows = await seed(engine, declare(load(TASKS)), tenant)
    before = await state(engine, "tasks", "projects")
    # assignee goes; owner comes (a rename, to Repogate a drop and an add).
    renamed = evolve(tmp_path, (TASK, ASSIGNEE, ASSIGNEE.replace("assignee", "owner")))

    with pytest.raises(Refused) as refused:
        await upgrade(engine, declared=renamed)

    (refusal,) = refused.value.refusals
    message = str(refused.value)
    assert refusal.where.startswith("tasks.assignee (field acme.")
    assert refusal.where.endswith(".Task.assignee)")
    assert "dropping the column loses its data" in message
    assert "renamed to owner" in message
    assert "repogate schema drop tasks.assignee --yes" in message
    await assert_unchanged(engine, before)  # owner was not added either
    async with engine.connect() as conn:
        assert (await conn.run_sync(plan, renamed)).refusals == refused.value.refusals
    assert await get(engine, declare(load(TASKS)), "Task", tenant, rows["task"]["id"])


@pytest.mark.parametrize(
    ("column", "old", "new", "reason"),
    [
        ("priority", "int32 priority = 12", "int64 priority = 12", "retyped from int32 INTEGER"),
        ("tags", "repeated string tags", "repeated int64 tags", "retyped from list<string>"),
        ("assignee", ASSIGNEE, ASSIGNEE.replace("optional ", ""), "now NOT NULL"),
        (
            "title",
            "max_len: 200",
            "max_len: 100",
            "from string VARCHAR(200) to string VARCHAR(100)",
        ),
    ],
    ids=["int32-int64", "list-element", "not-null", "shorter"],
)
async def test_retyping_a_field_is_refused_and_changes_nothing(
    engine: AsyncEngine, tmp_path: Path, tenant: str, column: str, old: str, new: str, reason: str
) -> None:
    await upgrade(engine, declared=declare(load(TASKS)))
    await seed(engine, declare(load(TASKS)), tenant)
    before = await state(engine, "tasks")
    changed = evolve(tmp_path, (TASK, old, new))

    with pytest.raises(Refused) as refused:
        await upgrade(engine, declared=changed)

    (refusal,) = refused.value.refusals
    assert refusal.where.startswith(f"tasks.{column} (field acme.")
    assert reason in refusal.reason
    await assert_unchanged(engine, before)


async def test_a_removed_resource_is_refused(engine: AsyncEngine, tmp_path: Path) -> None:
    await upgrade(engine, declared=declare(load(TASKS)))
    before = await state(engine, "comments")

    with pytest.raises(Refused) as refused:
        await upgrade(engine, declared=evolve(tmp_path, *NO_COMMENTS, add=LABEL))

    assert [r.where for r in refused.value.refusals] == ["comments"]
    message = str(refused.value)
    assert "resource acme.tasks.v1.Comment is no longer in the schema" in message
    assert "repogate schema drop comments --yes" in message
    await assert_unchanged(engine, before)  # labels was not created either


# ------------------------------------------------------------ the explicit drop


async def test_schema_drop_drops_what_the_schema_no_longer_declares(
    engine: AsyncEngine, tmp_path: Path, tenant: str
) -> None:
    await upgrade(engine, declared=declare(load(TASKS)))
    rows = await seed(engine, declare(load(TASKS)), tenant)
    # priority goes (the index naming it changes), and a field `unused` comes.
    evolved = evolve(
        tmp_path,
        (TASK, '"priority desc"', '"title"'),
        (TASK, "  int32 priority = 12 [", "  int32 unused = 99 ["),
    )
    with pytest.raises(Refused):
        await upgrade(engine, declared=evolved)
    with pytest.raises(SchemaError, match="still declares"):
        await locked(engine, drop, "tasks.title", evolved)
    with pytest.raises(SchemaError, match="Repogate's own"):
        await locked(engine, drop, "users", evolved)
    assert len(await history(engine)) == 1

    statements = await locked(engine, drop, "tasks.priority", evolved)

    assert statements[-1] == "ALTER TABLE tasks DROP COLUMN priority"
    assert "priority" not in await columns(engine, "tasks")
    entries = await history(engine)
    assert entries[-1].statements == statements
    assert "priority" not in entries[-1].snapshot["tasks"]["columns"]
    assert "ix_tasks_tenant_project_id_priority" not in entries[-1].snapshot["tasks"]["indexes"]
    # What remains is additive.
    await upgrade(engine, declared=evolved)
    task = await get(engine, evolved, "Task", tenant, rows["task"]["id"])
    assert (task["title"], task["unused"]) == ("first", 0)
    indexes = await index_names(engine, "tasks")
    assert "ix_tasks_tenant_project_id_title" in indexes
    assert "ix_tasks_tenant_project_id_priority" not in indexes
    assert len(await history(engine)) == 3


async def test_schema_drop_of_removed_resources(engine: AsyncEngine, tmp_path: Path) -> None:
    await upgrade(engine, declared=declare(load(TASKS)))
    evolved = evolve(tmp_path, *NO_COMMENTS, *NO_TASKS)
    with pytest.raises(Refused) as refused:
        await upgrade(engine, declared=evolved)
    assert sorted(r.where for r in refused.value.refusals) == ["comments", "tasks"]
    with pytest.raises(SchemaError, match="comments refers to it"):
        await locked(engine, drop, "tasks", evolved)
    with pytest.raises(SchemaError, match="still declares"):
        await locked(engine, drop, "projects", evolved)

    assert await locked(engine, drop, "comments", evolved) == ["DROP TABLE comments"]
    assert await locked(engine, drop, "tasks", evolved) == ["DROP TABLE tasks"]

    await upgrade(engine, declared=evolved)
    assert not {"comments", "tasks"} & await tables(engine)
    assert "projects" in await tables(engine)
    (*_, last) = await history(engine)
    assert set(last.snapshot) == {"projects"}


# ------------------------------------------------------------ several at once


async def test_concurrent_upgrades_record_one_change(url: str, engine: AsyncEngine) -> None:
    engines = [create_engine(url) for _ in range(INSTANCES)]
    declared = declare(load(TASKS))
    try:
        results = await asyncio.gather(
            *(upgrade(e, declared=declared) for e in engines), return_exceptions=True
        )
    finally:
        for each in engines:
            await each.dispose()

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert len(await history(engine)) == 1
    assert {"projects", "tasks", "comments"} <= await tables(engine)
