"""The purge covers a schema's tables: due rows go, children before their parents."""

from __future__ import annotations

from datetime import UTC, timedelta

import grpc
import pytest
from grpc import aio

from repositories.database import Database, create_engine
from repositories.maintenance import purge_due
from server.app import Repogate
from server.settings import Settings
from tests.declared import TASKS, Client

pytestmark = pytest.mark.e2e


async def test_purge_due_removes_due_rows_of_declared_tables(fresh_url: str) -> None:
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=fresh_url,
        schema_path=str(TASKS),
        soft_delete_retention=3600,
        purge_interval=0,
        shutdown_grace=1,
    )
    async with Repogate(settings) as app, aio.insecure_channel(app.address) as channel:
        c = Client(channel)
        kept = await c.project()
        gone = await c.project()
        task = await c.task(gone.id)
        await c("ProjectService/DeleteProject", id=gone.id)  # Project shows no purge_time
        deleted = await c("TaskService/DeleteTask", id=task.id)
        now = deleted.purge_time.ToDatetime(tzinfo=UTC) + timedelta(minutes=1)
        db = Database(create_engine(fresh_url))
        try:
            served = app.declared
            assert served is not None
            purged = await purge_due(db, now=now, declared=served.metadata)
        finally:
            await db.dispose()

        assert purged is not None
        assert (purged["projects"], purged["tasks"]) == (1, 1)
        purged_rows = (("ProjectService/GetProject", gone.id), ("TaskService/GetTask", task.id))
        for method, id_ in purged_rows:
            with pytest.raises(aio.AioRpcError) as error:
                await c(method, id=id_)
            assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert (await c("ProjectService/GetProject", id=kept.id)).id == kept.id
