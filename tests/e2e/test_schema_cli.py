"""`repogate schema check|plan|drop` and `repogate migrate` with REPOGATE_SCHEMA, as real
processes on fresh databases: the schema evolves on disk between runs, as a user's would.

Each process loads its own version of the schema's files; this process loads only
tests/schemas/tasks as it is, to seed rows through the declared repositories.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from grpc import aio
from sqlalchemy import inspect, text

from repositories.database import Database, create_engine
from schema.declared import declare
from schema.loading import load
from tests.cache_support import require_redis
from tests.declared import TASKS, Client
from tests.e2e.test_cli import cli_env, run, run_async, serving
from tests.e2e.test_workers import workers_env
from tests.pgbouncer import fresh_database

pytestmark = pytest.mark.e2e

TASK = Path("acme/tasks/v1/task.proto")
ASSIGNEE = "  optional string assignee = 17 [(repogate.options.v1.field).filterable = true];\n"
REVIEWER = "  optional string reviewer = 18;\n"
MIGRATORS = 3


def schema_copy(tmp_path: Path) -> Path:
    """tests/schemas/tasks in a directory of the test's own, to edit."""
    copy = tmp_path / "schema"
    shutil.copytree(TASKS, copy)
    return copy


def restore(schema: Path) -> None:
    shutil.copy(TASKS / TASK, schema / TASK)


def edit(schema: Path, old: str, new: str) -> None:
    path = schema / TASK
    source = path.read_text()
    assert old in source, f"{old!r} is not in {TASK}"
    path.write_text(source.replace(old, new))


class Inspected:
    """The database as this process sees it, through an engine of its own."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def run(self, fn: Any) -> Any:
        engine = create_engine(self.url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()

    async def columns(self, table: str) -> set[str]:
        return {c["name"] for c in await self.run(lambda c: inspect(c).get_columns(table))}

    async def history(self) -> list[Any]:
        query = text("SELECT digest, statements FROM repogate_schema ORDER BY id")
        return list(await self.run(lambda c: c.execute(query).all()))

    async def seed(self, tenant: str) -> dict[str, Any]:
        """A project and a task, created through the declared repositories."""
        declared = declare(load(TASKS))
        repository = {
            spec.message.name: declared.resources[name].repository
            for name, spec in declared.schema.resources.items()
        }
        engine = create_engine(self.url)
        try:
            async with Database(engine).unit_of_work(tenant) as uow:
                project = await uow.repository(repository["Project"]).create({"name": "seed"})
                task = await uow.repository(repository["Task"]).create(
                    {"project_id": project["id"], "title": "seeded", "assignee": "ann"}
                )
                await uow.commit()
        finally:
            await engine.dispose()
        return task


def test_schema_check_prints_each_resource(tmp_path: Path) -> None:
    env = cli_env(tmp_path, schema=str(TASKS))

    checked = run(["schema", "check"], env, tmp_path)

    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert "acme.tasks.v1.Task  table tasks  order by create_time" in lines
    assert "  index (project_id, priority desc)" in lines
    assert "  index (payload.score)" in lines
    task = lines[lines.index("acme.tasks.v1.Task  table tasks  order by create_time") :]
    described = [line for line in task[1:12] if not line.startswith("  index ")]
    fields = {line.split()[0]: line.split()[1:] for line in described[:9]}
    assert fields["project_id"][0] == "uuid"
    assert 'reference(resource="Project"' in " ".join(fields["project_id"])
    assert fields["tags"][0] == "list<string>"
    assert fields["assignee"][:2] == ["string", "optional"]
    assert fields["attempts"][-1] == "counter"
    assert "  related project  parent Project via project_id" in task
    assert "  related tasks  children Task via project_id, limit 100, truncated more_tasks" in lines
    assert "acme.tasks.v1.TaskService" in lines
    assert "  ListTasks  list Task" in lines
    assert "  IncrementTaskCounters  increment Task" in lines
    assert lines[-1] == "3 resources, 3 services"


def test_schema_check_names_a_method_it_cannot_serve_and_takes_extensions(
    tmp_path: Path,
) -> None:
    auctions = Path(__file__).parents[1] / "schemas" / "auctions"
    root = str(Path(__file__).parents[2])  # where tests.auction_extensions is imported from

    bare = run(["schema", "check"], cli_env(tmp_path, schema=str(auctions)), tmp_path)
    extended = run(
        ["schema", "check"],
        cli_env(tmp_path, schema=str(auctions), extensions="tests.auction_extensions")
        | {"PYTHONPATH": root},
        tmp_path,
    )

    assert bare.returncode == 2, bare.stdout
    assert "acme.auctions.v1.AuctionService.PlaceBid: its name is no standard" in bare.stderr
    assert extended.returncode == 0, extended.stderr
    assert "  PlaceBid  extension" in extended.stdout.splitlines()


def test_schema_export_writes_what_buf_generate_needs(tmp_path: Path) -> None:
    out = tmp_path / "out"

    exported = run(["schema", "export", str(out)], cli_env(tmp_path, schema=str(TASKS)), tmp_path)
    again = run(["schema", "export", str(out)], cli_env(tmp_path, schema=str(TASKS)), tmp_path)

    assert exported.returncode == 0, exported.stderr
    written = set(exported.stdout.split())
    assert {"buf.yaml", "buf.gen.yaml", "proto/acme/tasks/v1/task.proto"} <= written
    assert "proto/repogate/options/v1/options.proto" in written
    assert all((out / name).is_file() for name in written)
    assert again.returncode == 2  # nothing it wrote is overwritten
    assert (out / "proto/acme/tasks/v1/task.proto").read_text() == (TASKS / TASK).read_text()


def test_schema_check_names_what_is_wrong(tmp_path: Path) -> None:
    schema = schema_copy(tmp_path)
    edit(schema, ASSIGNEE, ASSIGNEE + "  map<string, string> labels = 18;\n")

    wrong = run(["schema", "check"], cli_env(tmp_path, schema=str(schema)), tmp_path)
    missing = run(["schema", "check"], cli_env(tmp_path), tmp_path)

    assert wrong.returncode == 2, wrong.stdout
    assert "acme.tasks.v1.Task.labels: maps are not stored" in wrong.stderr
    assert missing.returncode == 2, missing.stdout
    assert "no schema: set REPOGATE_SCHEMA" in missing.stderr


async def test_concurrent_migrate_processes_record_one_change(
    fresh_url: str, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, database_url=fresh_url, schema=str(TASKS))

    results = await asyncio.gather(
        *(run_async(["migrate"], env, tmp_path) for _ in range(MIGRATORS))
    )

    assert [(code, err[-2000:]) for code, _, err in results if code != 0] == []
    db = Inspected(fresh_url)
    assert len(await db.history()) == 1
    assert "title" in await db.columns("tasks")
    code, out, err = await run_async(["schema", "plan"], env, tmp_path)
    assert code == 0, err
    assert out.strip().splitlines() == ["-- the declared tables are up to date"]


async def test_evolving_the_schema_through_plan_migrate_and_drop(
    fresh_url: str, tmp_path: Path, tenant: str
) -> None:
    schema = schema_copy(tmp_path)
    env = cli_env(tmp_path, database_url=fresh_url, schema=str(schema))
    db = Inspected(fresh_url)
    plan = await run_async(["schema", "plan"], env, tmp_path)
    assert plan[0] == 0, plan[2]
    assert "-- Repogate's own migrations run first: from nothing to 0006" in plan[1]
    assert "CREATE TABLE tasks (" in plan[1]
    assert (await run_async(["migrate"], env, tmp_path))[0] == 0
    await db.seed(tenant)

    # Additive: shown by plan, applied by migrate; the row survives.
    edit(schema, ASSIGNEE, ASSIGNEE + REVIEWER)
    code, out, err = await run_async(["schema", "plan"], env, tmp_path)
    assert code == 0, err
    assert "-- tasks: add column reviewer" in out
    assert (await run_async(["migrate"], env, tmp_path))[0] == 0
    assert "reviewer" in await db.columns("tasks")

    # Destructive: refused by plan and by migrate, with the way out; nothing changes.
    edit(schema, ASSIGNEE, "")
    code, out, err = await run_async(["schema", "plan"], env, tmp_path)
    assert code == 3, out + err
    assert "refused: tasks.assignee (field acme.tasks.v1.Task.assignee)" in err
    assert "repogate schema drop tasks.assignee --yes" in err
    code, out, err = await run_async(["migrate"], env, tmp_path)
    assert code == 3, out + err
    assert "tasks.assignee (field acme.tasks.v1.Task.assignee)" in err
    assert "Traceback" not in err
    assert "assignee" in await db.columns("tasks")
    assert len(await db.history()) == 2

    # The explicit step: without --yes it only says what it would do.
    code, out, err = await run_async(["schema", "drop", "tasks.assignee"], env, tmp_path)
    assert code == 3, out + err
    assert "ALTER TABLE tasks DROP COLUMN assignee;" in out
    assert "assignee" in await db.columns("tasks")
    code, out, err = await run_async(["schema", "drop", "tasks.assignee", "--yes"], env, tmp_path)
    assert code == 0, out + err
    assert "assignee" not in await db.columns("tasks")

    assert (await run_async(["migrate"], env, tmp_path))[0] == 0
    code, out, _ = await run_async(["schema", "plan"], env, tmp_path)
    assert (code, out.strip()) == (0, "-- the declared tables are up to date")
    rows = await db.run(lambda c: c.execute(text("SELECT title FROM tasks")).all())
    assert [row.title for row in rows] == ["seeded"]
    # The drop left the tables as declared: the migrate after it had nothing to record.
    assert len(await db.history()) == 3


async def test_serve_with_workers_applies_the_schema_before_starting_them(
    tmp_path: Path, tenant: str
) -> None:
    await require_redis()
    async with fresh_database() as url:
        schema = schema_copy(tmp_path)
        env, address = workers_env(tmp_path, url, schema=str(schema))
        assert (await run_async(["migrate"], env, tmp_path))[0] == 0
        seeded = await Inspected(url).seed(tenant)

        edit(schema, ASSIGNEE, "")  # refused: no worker starts
        code, out, err = await run_async(["serve"], env, tmp_path)
        assert code == 3, out + err
        assert "tasks.assignee (field acme.tasks.v1.Task.assignee)" in err

        restore(schema)
        edit(schema, ASSIGNEE, ASSIGNEE + REVIEWER)
        async with serving(env, tmp_path, address) as server:
            assert "reviewer" in await Inspected(url).columns("tasks")
            async with aio.insecure_channel(address) as channel:
                got = await Client(channel, tenant)("TaskService/GetTask", id=str(seeded["id"]))
            assert (got.title, got.assignee) == ("seeded", "ann")
            assert await server.stop() == 0, server.output()


def test_purge_covers_the_schema_tables(tmp_path: Path) -> None:
    env = cli_env(tmp_path, schema=str(TASKS))
    assert run(["migrate"], env, tmp_path).returncode == 0

    purged = run(["purge"], env, tmp_path)

    assert purged.returncode == 0, purged.stderr
    counts = dict(pair.split("=") for pair in purged.stdout.split())
    assert {"comments", "tasks", "projects", "users"} <= set(counts)
