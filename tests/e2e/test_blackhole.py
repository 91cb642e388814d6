"""A database that answers nothing (its packets dropped, not refused) is found out: calls
that run out of time make the server probe it, unanswered probes open its breaker, health
says NOT_SERVING and calls fail fast; once it answers again, all heals with no traffic.
A statement that is merely slow (waiting on a row lock) while the database answers the
probes changes nothing."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from repogate.v1 import user_pb2
from server.breaker import Breaker
from tests.e2e.support import Dedicated, StartRepogate, create, eventually, fails
from tests.e2e.test_deadlines import lock_a_user, rename
from tests.e2e.test_transactions import TxStub, commit
from tests.proxy import Proxy
from tests.rpc import md

pytestmark = pytest.mark.e2e

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
USERS = "repogate.v1.UserService"
PROBE_TIMEOUT = 0.3
OPEN_FOR = 2.0  # long enough that the call made once NOT_SERVING is seen meets it open
TRIP_AFTER = 2
DEADLINE = 0.5  # seconds each call gives itself


@pytest.fixture
async def app(postgresql_url: str, proxy: Proxy, start_repogate: StartRepogate) -> Dedicated:
    through_proxy = make_url(postgresql_url).set(host="127.0.0.1", port=proxy.port)
    return await start_repogate(
        database_url=through_proxy.render_as_string(hide_password=False),
        db_pool_size=2,
        db_max_overflow=0,
        tenant_max_concurrency=2,  # a lock's holder and its waiter
        purge_interval=0,
        breaker_trip_after=TRIP_AFTER,
        breaker_open_for=OPEN_FOR,
        db_probe_timeout=PROBE_TIMEOUT,
    )


async def health(app: Dedicated, service: str = USERS) -> int:
    stub = health_pb2_grpc.HealthStub(app.channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service))).status


def listing(app: Dedicated, tenant: str) -> object:
    """A call that always reaches the database (no cache answers a list)."""
    return app.users.ListUsers(user_pb2.ListUsersRequest(), metadata=md(tenant), timeout=DEADLINE)


async def times_out(call: object) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await call  # type: ignore[misc]
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_database_that_answers_nothing_is_found_out_and_healed(
    app: Dedicated, proxy: Proxy, tenant: str
) -> None:
    tenants = [tenant, *(f"{tenant}-{i}" for i in range(3))]
    ann = await create(app.users, tenant, username="ann")

    proxy.blackhole()
    # Calls of four tenants on a pool of two: two wait on the silent database, two on
    # the pool; each waits out its deadline.
    await asyncio.gather(*(times_out(listing(app, t)) for t in tenants))
    # Each round of the watcher (0.5 s apart) probes once, for at most PROBE_TIMEOUT;
    # TRIP_AFTER unanswered probes open the breaker. Three times as many rounds, each
    # given a second beside its probe, bound the wait: a bound, not a speed claim.
    rounds = 3 * TRIP_AFTER
    await eventually(
        lambda: health_is(app, NOT_SERVING), "NOT_SERVING", within=rounds * (PROBE_TIMEOUT + 1)
    )
    fast = await fails(listing(app, tenant))
    assert (fast.code, fast.reason) == (grpc.StatusCode.UNAVAILABLE, "CIRCUIT_OPEN")
    assert await health(app, "") == NOT_SERVING

    proxy.restore()
    await eventually(lambda: health_is(app, SERVING), "SERVING again", within=10)

    assert await health(app, "") == SERVING
    lists = [await listing(app, t) for t in tenants]
    assert [[u.id for u in listed.users] for listed in lists] == [[ann.id], [], [], []]  # type: ignore[attr-defined]
    renamed = await app.users.UpdateUser(rename(ann.id, "back"), metadata=md(tenant))
    assert renamed.display_name == "back"


async def test_a_statement_waiting_on_a_lock_past_its_deadline_leaves_health_alone(
    app: Dedicated, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="repositories.database")
    holder, ann = await lock_a_user(app, tenant)
    breaker = app.app.breakers["database"]

    for i in range(TRIP_AFTER + 1):
        await times_out(
            app.users.UpdateUser(rename(ann.id, "waiter"), metadata=md(tenant), timeout=DEADLINE)
        )
        # The server probed, and the database answered.
        await eventually(partial(verdict, caplog, breaker, i + 1), "the probe's verdict")

    assert breaker.state.value == "CLOSED"
    assert await health(app) == SERVING
    await commit(TxStub(app.channel), tenant, holder)


async def health_is(app: Dedicated, status: int) -> bool:
    return await health(app) == status


def verdict(caplog: pytest.LogCaptureFixture, breaker: Breaker, probes: int) -> bool:
    """Whether `probes` probes were answered and the breaker wants no more."""
    answered = [r for r in caplog.records if r.getMessage().startswith("database probe answered")]
    return len(answered) >= probes and not breaker.wants_probe
