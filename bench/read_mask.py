"""What a read_mask saves a List: ListTasks of one page of 1,000 tasks, each with a
~2 KB `payload`, with and without `read_mask: id,title`, through a Repogate serving the
tasks schema (tests/schemas/tasks), and the same page in raw SQL, all columns and the
masked ones, on the same database.

    python -m bench.read_mask --database-url postgresql://postgres@127.0.0.1:5432/maskbench
    python -m bench.read_mask --database-url sqlite:///./maskbench.db

The database should be one of the bench's own (created empty beforehand); the schema's
tables are migrated into it, and each run seeds a tenant of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pool, field_mask_pb2
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc import aio
from sqlalchemy import text

from repositories.database import create_engine
from schema.loading import load
from server.app import Repogate
from server.settings import Settings

TASKS = Path(__file__).resolve().parent.parent / "tests" / "schemas" / "tasks"
PACKAGE = "acme.tasks.v1"
PAYLOAD = {f"k{i}": "x" * 40 for i in range(40)}  # about 2 KB as JSON
_PAGE = "FROM tasks WHERE tenant_id = :t AND delete_time IS NULL ORDER BY create_time, id LIMIT :n"


def message(type_name: str, /, **fields: Any) -> Any:
    return GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(f"{PACKAGE}.{type_name}")
    )(**fields)


class Calls:
    def __init__(self, channel: aio.Channel, tenant: str) -> None:
        self._channel = channel
        self._metadata = (("x-tenant-id", tenant),)

    async def __call__(self, service: str, method: str, request: Message) -> Any:
        descriptor = descriptor_pool.Default().FindServiceByName(f"{PACKAGE}.{service}")
        output = GetMessageClass(descriptor.methods_by_name[method].output_type)
        call = self._channel.unary_unary(
            f"/{PACKAGE}.{service}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=output.FromString,
        )
        return await call(request, metadata=self._metadata, timeout=60)


async def median_ms(call: Callable[[], Awaitable[Any]], runs: int) -> float:
    await call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


async def main(url: str, rows: int, runs: int) -> None:
    load(TASKS)
    settings = Settings(
        listen="127.0.0.1:0", database_url=url, schema_path=str(TASKS), purge_interval=0
    )
    tenant = f"bench-{uuid.uuid4().hex[:12]}"
    async with Repogate(settings) as app, aio.insecure_channel(app.address) as channel:
        calls = Calls(channel, tenant)
        project = await calls(
            "ProjectService",
            "CreateProject",
            message("CreateProjectRequest", project=message("Project", name="bench")),
        )
        for start in range(0, rows, 500):
            batch = []
            for n in range(start, min(rows, start + 500)):
                task = message("Task", project_id=project.id, title=f"task {n}", tags=["a"])
                task.payload.update(PAYLOAD)
                batch.append(message("CreateTaskRequest", task=task))
            await calls(
                "TaskService",
                "BatchCreateTasks",
                message("BatchCreateTasksRequest", requests=batch),
            )
        whole = message("ListTasksRequest", page_size=rows)
        masked = message(
            "ListTasksRequest",
            page_size=rows,
            read_mask=field_mask_pb2.FieldMask(paths=["id", "title"]),
        )
        sizes = [
            (await calls("TaskService", "ListTasks", request)).ByteSize()
            for request in (whole, masked)
        ]
        timings = [
            await median_ms(functools.partial(calls, "TaskService", "ListTasks", request), runs)
            for request in (whole, masked)
        ]
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            params = {"t": tenant, "n": rows + 1}
            every = text(f"SELECT * {_PAGE}")
            some = text(f"SELECT id, title, create_time {_PAGE}")
            raw = [
                await median_ms(functools.partial(conn.execute, query, params), runs)
                for query in (every, some)
            ]
    finally:
        await engine.dispose()
    kind = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print(f"{kind}, one page of {rows} tasks with a 2 KB payload, median of {runs}:")
    print(f"  ListTasks, whole          {timings[0]:7.1f} ms  {sizes[0]:>9} bytes")
    print(f"  ListTasks, id,title       {timings[1]:7.1f} ms  {sizes[1]:>9} bytes")
    print(f"  raw SQL, every column     {raw[0]:7.1f} ms")
    print(f"  raw SQL, id,title + order {raw[1]:7.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.database_url, args.rows, args.runs))
