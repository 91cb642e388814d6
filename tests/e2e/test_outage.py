"""The database goes away and comes back: calls fail fast while its breaker is open,
health says NOT_SERVING, and both heal by themselves once it answers again."""

from __future__ import annotations

import contextlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from repogate.v1 import cache_pb2, cache_pb2_grpc
from server.errors import PUSHBACK_KEY
from server.served import LIVENESS, READINESS
from tests.e2e.support import Dedicated, StartRepogate, create, eventually, fails, get
from tests.proxy import Proxy
from tests.rpc import md

pytestmark = pytest.mark.e2e

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def app(postgresql_url: str, proxy: Proxy, start_repogate: StartRepogate) -> Dedicated:
    through_proxy = make_url(postgresql_url).set(host="127.0.0.1", port=proxy.port)
    return await start_repogate(
        database_url=through_proxy.render_as_string(hide_password=False),
        db_pool_size=2,
        purge_interval=0,
        breaker_trip_after=2,
        breaker_open_for=0.5,
    )


async def health(app: Dedicated, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(app.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    return reply.status


async def test_a_lost_database_fails_fast_reports_not_serving_and_heals(
    app: Dedicated, proxy: Proxy, tenant: str
) -> None:
    ann = await create(app.users, tenant, username="ann")

    await proxy.close()
    first = [await fails(get(app.users, tenant, ann.id)) for _ in range(2)]
    fast = await fails(get(app.users, tenant, ann.id))

    assert [(e.code, e.reason) for e in first] == [
        (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    ] * 2
    assert (fast.code, fast.reason) == (grpc.StatusCode.UNAVAILABLE, "CIRCUIT_OPEN")
    assert fast.metadata["dependency"] == "database"
    await eventually(lambda: health_is(app, "repogate.v1.UserService", NOT_SERVING))
    assert await health(app, "") == NOT_SERVING
    assert await health(app, "repogate.v1.CacheService") == SERVING

    await proxy.open()
    await eventually(lambda: health_is(app, "repogate.v1.UserService", SERVING))

    assert await health(app, "") == SERVING
    assert await get(app.users, tenant, ann.id) == ann


async def health_is(app: Dedicated, service: str, status: int) -> bool:
    return await health(app, service) == status


async def test_readiness_follows_the_database_while_liveness_stays_serving(
    app: Dedicated, proxy: Proxy, tenant: str
) -> None:
    stub = health_pb2_grpc.HealthStub(app.channel)
    liveness = stub.Watch(health_pb2.HealthCheckRequest(service=LIVENESS))
    assert (await liveness.read()).status == SERVING

    await proxy.close()
    for _ in range(2):
        await fails(get(app.users, tenant, "6f1c1f0e-0000-4000-8000-000000000000"))
    await eventually(lambda: health_is(app, READINESS, NOT_SERVING))
    alive_while_cut = await health(app, LIVENESS)
    await proxy.open()
    await eventually(lambda: health_is(app, READINESS, SERVING))
    await app.app.stop(1)  # the one change liveness may see: stopping
    changes = []
    with contextlib.suppress(grpc.aio.AioRpcError):  # the stop ends the watch
        while (reply := await liveness.read()) is not grpc.aio.EOF:
            changes.append(reply.status)

    assert alive_while_cut == SERVING
    assert changes == [NOT_SERVING]


async def test_an_open_circuit_tells_clients_when_to_retry(
    app: Dedicated, proxy: Proxy, tenant: str
) -> None:
    await proxy.close()
    for _ in range(2):
        await fails(get(app.users, tenant, "6f1c1f0e-0000-4000-8000-000000000000"))

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await get(app.users, tenant, "6f1c1f0e-0000-4000-8000-000000000000")

    trailers = dict(refused.value.trailing_metadata() or ())
    assert 0 < int(trailers[PUSHBACK_KEY]) <= 500


async def test_client_faults_never_open_the_circuit(app: Dedicated, tenant: str) -> None:
    for _ in range(5):
        error = await fails(get(app.users, tenant, "6f1c1f0e-0000-4000-8000-000000000000"))
        assert error.code == grpc.StatusCode.NOT_FOUND

    assert await health(app, "repogate.v1.UserService") == SERVING
    assert app.app.breakers["database"].state.value == "CLOSED"


async def test_the_cache_keeps_serving_while_the_database_is_away(
    app: Dedicated, proxy: Proxy, tenant: str
) -> None:
    stub = cache_pb2_grpc.CacheServiceStub(app.channel)
    await proxy.close()

    await stub.Set(cache_pb2.SetRequest(key="k", value=b"v"), metadata=md(tenant))
    reply = await stub.Get(cache_pb2.GetRequest(key="k"), metadata=md(tenant))

    assert reply.value == b"v"


async def test_cache_service_fails_fast_once_the_cache_breaker_opens(
    start_repogate: StartRepogate, tenant: str
) -> None:
    app = await start_repogate(
        redis_url="redis://127.0.0.1:1/0", breaker_trip_after=2, breaker_open_for=60
    )
    stub = cache_pb2_grpc.CacheServiceStub(app.channel)

    def read() -> object:
        return stub.Get(cache_pb2.GetRequest(key="k"), metadata=md(tenant))

    first = [await fails(read()) for _ in range(2)]
    fast = await fails(read())
    ann = await create(app.users, tenant, username="ann")  # the database does not care

    assert [e.reason for e in first] == ["CACHE_UNAVAILABLE"] * 2
    assert (fast.code, fast.reason) == (grpc.StatusCode.UNAVAILABLE, "CIRCUIT_OPEN")
    assert fast.metadata["dependency"] == "cache"
    assert await get(app.users, tenant, ann.id) == ann
