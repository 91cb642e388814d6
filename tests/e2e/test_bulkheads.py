"""One tenant's pile-up does not take the database from the others (PostgreSQL, real
row locks): each tenant may hold a bounded share of the pool, a call beyond it is
refused at once with RESOURCE_EXHAUSTED, and waiting for the pool is load, not a
database fault, so it never opens the breaker."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from repogate.v1 import user_pb2
from server.errors import PUSHBACK_KEY
from tests.e2e.support import Dedicated, StartRepogate, create, eventually, fails, get, in_use
from tests.e2e.test_deadlines import lock_a_user, rename
from tests.e2e.test_metrics import scrape, value
from tests.e2e.test_transact import creating, transact
from tests.e2e.test_transactions import TxStub, begin, commit, create_in, inside
from tests.rpc import details, md

pytestmark = pytest.mark.e2e

SERVING = health_pb2.HealthCheckResponse.SERVING
PILE = 200


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


async def serving(app: Dedicated) -> bool:
    reply = await health_pb2_grpc.HealthStub(app.channel).Check(
        health_pb2.HealthCheckRequest(service="repogate.v1.UserService")
    )
    return reply.status == SERVING


async def others_work(app: Dedicated, tenant: str, name: str) -> None:
    """A few calls of another tenant that each need a connection (no cache can answer)."""
    user = await create(app.users, tenant, username=name)
    renamed = await app.users.UpdateUser(rename(user.id, f"{name}!"), metadata=md(tenant))
    listed = await app.users.ListUsers(user_pb2.ListUsersRequest(), metadata=md(tenant))
    count = await app.users.CountUsers(user_pb2.CountUsersRequest(), metadata=md(tenant))
    assert renamed.display_name == f"{name}!"
    assert user.id in {u.id for u in listed.users}
    assert count.total_size == len(listed.users)


async def test_a_tenant_piled_up_on_a_locked_row_leaves_the_others_served(
    postgresql_url: str, start_repogate: StartRepogate
) -> None:
    # The set-up: a pool of 5 and a 2 s pool timeout; by default a tenant may
    # hold half the pool (2 connections), its open transaction included.
    app = await start_repogate(
        database_url=postgresql_url,
        db_pool_size=5,
        db_max_overflow=0,
        db_pool_timeout=2,
        purge_interval=0,
        metrics_listen="127.0.0.1:0",
    )
    hot, other = new_tenant(), new_tenant()
    holder, ann = await lock_a_user(app, hot)
    piled = [
        asyncio.ensure_future(
            app.users.UpdateUser(rename(ann.id, f"waiter {i}"), metadata=md(hot), timeout=30)
        )
        for i in range(PILE)
    ]
    # The pile-up in place: all but the one caller the tenant still had room for refused.
    await eventually(lambda: sum(task.done() for task in piled) == PILE - 1, "refusals")

    for i in range(5):  # while the hot tenant's caller still waits on the lock
        await others_work(app, other, f"bob{i}")
    assert await serving(app)
    assert app.app.breakers["database"].state.value == "CLOSED"
    assert sum(task.done() for task in piled) == PILE - 1

    await commit(TxStub(app.channel), hot, holder)
    outcomes = await asyncio.gather(*piled, return_exceptions=True)

    refusals = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert Counter(o.code() for o in refusals) == {grpc.StatusCode.RESOURCE_EXHAUSTED: PILE - 1}
    refused = details(refusals[0])
    assert refused.reason == "TOO_MANY_CONCURRENT_CALLS"
    assert refused.metadata["limit"] == "2"
    assert 0 < int(refused.metadata["retry_after_ms"]) <= 1000
    trailers = dict(refusals[0].trailing_metadata() or ())
    assert trailers[PUSHBACK_KEY] == refused.metadata["retry_after_ms"]
    assert [o.display_name for o in outcomes if isinstance(o, user_pb2.User)] == [
        next(o.display_name for o in outcomes if isinstance(o, user_pb2.User))
    ]
    assert app.app.breakers["database"].state.value == "CLOSED"
    samples = await scrape(app)
    assert value(samples, "repogate_tenant_calls_refused_total", tenant=hot) == PILE - 1
    assert value(samples, "repogate_tenant_calls_refused_total", tenant=other) is None
    # The tenant's slots came back with its calls and its transaction.
    await others_work(app, hot, "ann2")


async def test_waiting_out_the_pool_is_load_not_a_database_fault(
    postgresql_url: str, start_repogate: StartRepogate, tenant: str
) -> None:
    # No cap beyond the pool: calls queue for it and time out there.
    app = await start_repogate(
        database_url=postgresql_url,
        db_pool_size=2,
        db_max_overflow=0,
        db_pool_timeout=0.2,
        tenant_max_concurrency=2,
        breaker_trip_after=2,
        purge_interval=0,
    )
    holder, ann = await lock_a_user(app, tenant)  # one connection
    waiter = asyncio.ensure_future(
        app.users.UpdateUser(rename(ann.id, "waiter"), metadata=md(tenant), timeout=30)
    )  # the other
    await eventually(lambda: app.app.units is not None and in_use(app) == 2, "a full pool")

    starved = [await fails(get(app.users, new_tenant(), str(uuid.uuid4()))) for _ in range(4)]

    assert [(e.code, e.reason) for e in starved] == [
        (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    ] * 4
    assert app.app.breakers["database"].state.value == "CLOSED"
    assert await serving(app)
    await commit(TxStub(app.channel), tenant, holder)
    assert (await waiter).display_name == "waiter"
    assert (await get(app.users, tenant, ann.id)).display_name == "waiter"


async def test_transactions_hold_their_tenants_slots_and_calls_inside_take_none(
    postgresql_url: str, start_repogate: StartRepogate, tenant: str
) -> None:
    app = await start_repogate(
        database_url=postgresql_url,
        db_pool_size=4,
        db_max_overflow=0,
        max_transactions=3,
        tenant_max_concurrency=2,
        tenant_queue_timeout=0,
        purge_interval=0,
    )
    txs = TxStub(app.channel)
    first, second = [await begin(txs, tenant) for _ in range(2)]  # the tenant's two slots

    refused = [
        await fails(create(app.users, tenant, username="outside")),
        await fails(
            app.users.GetUserByEmail(
                user_pb2.GetUserByEmailRequest(email="a@example.com"), metadata=md(tenant)
            )
        ),
        await fails(begin(txs, tenant)),
        await fails(transact(txs, tenant, creating("batched"))),
    ]
    inside_first = await create_in(app.users, tenant, first, "inside")
    listed = await app.users.ListUsers(user_pb2.ListUsersRequest(), metadata=inside(tenant, second))
    await others_work(app, new_tenant(), "bob")

    assert [(e.code, e.reason) for e in refused] == [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_CONCURRENT_CALLS")
    ] * 4
    assert listed.users == []
    await commit(txs, tenant, first)  # gives its slot back
    ann = await create(app.users, tenant, username="ann")
    assert {
        u.id
        for u in (await app.users.ListUsers(user_pb2.ListUsersRequest(), metadata=md(tenant))).users
    } == {inside_first.id, ann.id}
    await transact(txs, tenant, creating("batched"))
