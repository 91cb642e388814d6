"""GetUser through the read-through cache, on Redis and in memory: served from the
cache, never stale after a committed write (not after one rolled back), shared
through Redis by two servers, and still answering while Redis is down."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import update

from repogate.v1 import user_pb2
from repositories.database import Database
from repositories.tables import users
from tests.cache_support import CACHE_BACKENDS, CLOSED_REDIS_URL, REDIS_URL, require_redis
from tests.e2e.support import Dedicated, StartRepogate, create, eventually, get
from tests.e2e.test_transactions import TxStub, begin, commit, inside, rollback
from tests.rpc import md

pytestmark = pytest.mark.e2e


@pytest.fixture(params=CACHE_BACKENDS)
async def start(
    request: pytest.FixtureRequest, database_url: str, start_repogate: StartRepogate
) -> Any:
    """Starts Repogates on the test's database and the parametrised cache backend."""
    redis_url = None
    if request.param == "redis":
        await require_redis()
        redis_url = REDIS_URL

    async def started(**overrides: Any) -> Dedicated:
        fields = {"database_url": database_url, "redis_url": redis_url, "db_pool_size": 4}
        return await start_repogate(**{**fields, "purge_interval": 0, **overrides})

    return started


def hits(app: Dedicated) -> int:
    assert app.app.cache is not None
    return app.app.cache.stats.hits


def errors(app: Dedicated) -> int:
    assert app.app.cache is not None
    return app.app.cache.stats.errors


def failovers(app: Dedicated) -> int:
    """Primaries of a replicated cache that `app` found promoted since they started."""
    assert app.app.cache is not None
    return app.app.cache.stats.failovers


async def rename_behind_its_back(database: Database, tenant: str, id_: str, name: str) -> None:
    """Changes a row without Repogate knowing: only a cached answer can still show the old."""
    stmt = (
        update(users)
        .where(users.c.tenant_id == tenant, users.c.id == uuid.UUID(id_))
        .values(display_name=name)
    )
    async with database.engine.begin() as conn:
        await conn.execute(stmt)


async def rename(app: Dedicated, tenant: str, id_: str, name: str, **metadata: str) -> None:
    request = user_pb2.UpdateUserRequest(user=user_pb2.User(id=id_, display_name=name))
    await app.users.UpdateUser(request, metadata=md(tenant, **metadata))


async def test_a_repeated_get_is_served_from_the_cache(
    start: Any, database: Database, tenant: str
) -> None:
    app = await start()
    ann = await create(app.users, tenant, username="ann")
    first = await get(app.users, tenant, ann.id)
    before = hits(app)

    await rename_behind_its_back(database, tenant, ann.id, "changed underneath")
    second = await get(app.users, tenant, ann.id)

    assert second == first == ann
    assert hits(app) == before + 1


async def test_a_committed_write_is_seen_at_once(start: Any, tenant: str) -> None:
    app = await start()
    ann = await create(app.users, tenant, username="ann")
    await get(app.users, tenant, ann.id)

    await rename(app, tenant, ann.id, "Ann")
    after_update = await get(app.users, tenant, ann.id)
    await app.users.DeleteUser(user_pb2.DeleteUserRequest(id=ann.id), metadata=md(tenant))
    after_delete = await get(app.users, tenant, ann.id)
    await app.users.UndeleteUser(user_pb2.UndeleteUserRequest(id=ann.id), metadata=md(tenant))
    after_undelete = await get(app.users, tenant, ann.id)

    assert after_update.display_name == "Ann"
    assert after_delete.HasField("delete_time")
    assert not after_undelete.HasField("delete_time")
    assert after_undelete.etag != after_delete.etag != after_update.etag


async def test_a_transactions_writes_reach_the_cache_only_when_it_commits(
    start: Any, tenant: str
) -> None:
    app = await start()
    stub = TxStub(app.channel)
    ann = await create(app.users, tenant, username="ann")
    await get(app.users, tenant, ann.id)

    dropped = await begin(stub, tenant)
    await rename(app, tenant, ann.id, "dropped", x_transaction_id=dropped.id)
    await rollback(stub, tenant, dropped)
    after_rollback = await get(app.users, tenant, ann.id)
    kept = await begin(stub, tenant)
    await rename(app, tenant, ann.id, "kept", x_transaction_id=kept.id)
    inside_before_commit = await app.users.GetUser(
        user_pb2.GetUserRequest(id=ann.id), metadata=inside(tenant, kept)
    )
    outside_before_commit = await get(app.users, tenant, ann.id)
    await commit(stub, tenant, kept)
    after_commit = await get(app.users, tenant, ann.id)

    assert after_rollback == ann
    assert inside_before_commit.display_name == "kept"
    assert outside_before_commit == ann
    assert after_commit.display_name == "kept"


async def test_a_batch_write_is_seen_at_once(start: Any, tenant: str) -> None:
    app = await start()
    created = [await create(app.users, tenant, username=name) for name in ("ann", "bob")]
    for user in created:
        await get(app.users, tenant, user.id)

    await app.users.BatchUpdateUsers(
        user_pb2.BatchUpdateUsersRequest(
            requests=[
                user_pb2.UpdateUserRequest(user=user_pb2.User(id=u.id, display_name="new"))
                for u in created
            ]
        ),
        metadata=md(tenant),
    )

    assert [(await get(app.users, tenant, u.id)).display_name for u in created] == ["new"] * 2


async def test_entries_expire_after_their_ttl(start: Any, database: Database, tenant: str) -> None:
    app = await start(cache_ttl=1)
    ann = await create(app.users, tenant, username="ann")
    await get(app.users, tenant, ann.id)
    await rename_behind_its_back(database, tenant, ann.id, "changed underneath")

    async def fresh() -> bool:
        return (await get(app.users, tenant, ann.id)).display_name == "changed underneath"

    await eventually(fresh)


async def test_two_servers_sharing_redis_never_read_stale(
    database_url: str, start_repogate: StartRepogate, tenant: str
) -> None:
    await require_redis()
    fields: dict[str, Any] = {"database_url": database_url, "redis_url": REDIS_URL}
    reader = await start_repogate(db_pool_size=4, purge_interval=0, **fields)
    writer = await start_repogate(db_pool_size=4, purge_interval=0, **fields)
    ann = await create(writer.users, tenant, username="ann")
    await get(reader.users, tenant, ann.id)
    await get(reader.users, tenant, ann.id)

    await rename(writer, tenant, ann.id, "from the writer")

    assert (await get(reader.users, tenant, ann.id)).display_name == "from the writer"


async def test_reads_and_writes_go_on_while_redis_is_down(
    database_url: str, start_repogate: StartRepogate, tenant: str
) -> None:
    app = await start_repogate(
        database_url=database_url, redis_url=CLOSED_REDIS_URL, db_pool_size=4, purge_interval=0
    )
    ann = await create(app.users, tenant, username="ann")

    first = await get(app.users, tenant, ann.id)
    await rename(app, tenant, ann.id, "Ann")
    second = await get(app.users, tenant, ann.id)

    assert first == ann
    assert second.display_name == "Ann"
    assert app.app.cache is not None
    assert app.app.cache.stats.errors > 0
