"""Metrics through a real server, scraped over HTTP and read with prometheus-client's
own parser."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
import uuid

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from repogate.v1 import transaction_pb2, transaction_pb2_grpc, user_pb2
from server.metrics import LATENCY_BUCKETS, Metrics
from server.worker_metrics import WorkerMetrics
from tests.e2e.support import (
    Dedicated,
    StartRepogate,
    create,
    fails,
    get,
    update,
    update_request,
)
from tests.polling import eventually
from tests.rpc import md

pytestmark = pytest.mark.e2e

USER_SERVICE = "repogate.v1.UserService"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def scrape(app: Dedicated) -> Samples:
    assert app.app.metrics is not None
    # In a thread: the endpoint is served by this event loop.
    status, body = await asyncio.to_thread(fetch, f"http://{app.app.metrics.address}/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def rpc(method: str) -> dict[str, str]:
    """go-grpc-prometheus's labels for a unary method of UserService."""
    return {"grpc_type": "unary", "grpc_service": USER_SERVICE, "grpc_method": method}


def handled(samples: Samples, method: str, code: str) -> float | None:
    return value(samples, "grpc_server_handled_total", **rpc(method), grpc_code=code)


@pytest.fixture
async def app(start_repogate: StartRepogate) -> Dedicated:
    return await start_repogate(metrics_listen="127.0.0.1:0", db_pool_size=7)


@pytest.fixture
async def on_postgresql(start_repogate: StartRepogate, postgresql_url: str) -> Dedicated:
    return await start_repogate(metrics_listen="127.0.0.1:0", database_url=postgresql_url)


async def test_calls_are_counted_under_go_grpc_prometheus_names(
    app: Dedicated, tenant: str
) -> None:
    user = await create(app.users, tenant)
    await get(app.users, tenant, user.id)
    await get(app.users, tenant, user.id)
    await fails(get(app.users, tenant, str(uuid.uuid4())))
    await health_pb2_grpc.HealthStub(app.channel).Check(health_pb2.HealthCheckRequest())

    samples = await scrape(app)

    assert handled(samples, "CreateUser", "OK") == 1
    assert handled(samples, "GetUser", "OK") == 2
    # grpc_code as grpc-go spells it, as go-grpc-prometheus writes it.
    assert handled(samples, "GetUser", "NotFound") == 1
    assert value(samples, "grpc_server_started_total", **rpc("GetUser")) == 3
    assert value(samples, "grpc_server_msg_received_total", **rpc("GetUser")) == 3
    # A unary call sends its one message only when it ends OK.
    assert value(samples, "grpc_server_msg_sent_total", **rpc("GetUser")) == 2
    assert value(samples, "repogate_grpc_server_in_flight", **rpc("GetUser")) == 0
    # Only Repogate's own services are counted, not health or reflection.
    assert not [key for key in samples if ("grpc_service", "grpc.health.v1.Health") in key[1]]
    # The names before go-grpc-prometheus's are gone.
    assert not [key for key in samples if key[0].startswith("repogate_rpc_")]


async def test_a_call_in_flight_is_started_and_not_yet_handled(app: Dedicated, tenant: str) -> None:
    transactions = transaction_pb2_grpc.TransactionServiceStub(app.channel)
    user = await create(app.users, tenant)
    began = await transactions.BeginTransaction(
        transaction_pb2.BeginTransactionRequest(), metadata=md(tenant)
    )
    # The transaction's update holds the row; an update outside it waits for it.
    renamed = user_pb2.User(id=user.id, username="renamed")
    await app.users.UpdateUser(
        update_request(renamed, ["username"]), metadata=md(tenant, x_transaction_id=began.id)
    )
    waiting = asyncio.ensure_future(update(app.users, tenant, renamed, ["username"]))

    async def in_flight() -> bool:
        samples = await scrape(app)
        return value(samples, "repogate_grpc_server_in_flight", **rpc("UpdateUser")) == 1

    await eventually(in_flight, "an UpdateUser in flight")
    during = await scrape(app)
    await transactions.Commit(
        transaction_pb2.CommitRequest(transaction_id=began.id), metadata=md(tenant)
    )
    await waiting
    after = await scrape(app)

    assert value(during, "grpc_server_started_total", **rpc("UpdateUser")) == 2
    assert handled(during, "UpdateUser", "OK") == 1
    assert value(after, "repogate_grpc_server_in_flight", **rpc("UpdateUser")) == 0
    assert handled(after, "UpdateUser", "OK") == 2


async def test_latency_is_a_histogram_by_method(app: Dedicated, tenant: str) -> None:
    user = await create(app.users, tenant)
    await get(app.users, tenant, user.id)
    await get(app.users, tenant, user.id)

    samples = await scrape(app)

    labels = rpc("GetUser")
    buckets = {
        dict(key[1])["le"]: count
        for key, count in samples.items()
        if key[0] == "grpc_server_handling_seconds_bucket" and set(labels.items()) < key[1]
    }
    assert set(buckets) == {*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"}
    assert buckets["+Inf"] == 2
    assert value(samples, "grpc_server_handling_seconds_count", **labels) == 2
    total = value(samples, "grpc_server_handling_seconds_sum", **labels)
    assert total is not None
    assert total > 0


async def test_statement_time_and_pool_wait_are_histograms(
    on_postgresql: Dedicated, tenant: str
) -> None:
    app = on_postgresql
    user = await create(app.users, tenant)
    await get(app.users, tenant, user.id)

    samples = await scrape(app)

    select_users = {
        "db_system": "postgresql",
        "db_operation_name": "SELECT",
        "db_collection_name": "users",
    }
    selects = value(samples, "db_client_operation_duration_seconds_count", **select_users)
    assert selects is not None
    assert selects >= 1
    inserts = value(
        samples,
        "db_client_operation_duration_seconds_count",
        **(select_users | {"db_operation_name": "INSERT"}),
    )
    assert inserts is not None
    assert inserts >= 1
    # Each call took a connection from the pool at least once.
    waits = value(samples, "db_client_connection_wait_time_seconds_count", db_system="postgresql")
    assert waits is not None
    assert waits >= 2


async def test_server_faults_are_counted_under_their_code(
    start_repogate: StartRepogate, tenant: str
) -> None:
    # Never migrated: every Get fails with INTERNAL.
    app = await start_repogate(migrate=False, metrics_listen="127.0.0.1:0")
    await fails(get(app.users, tenant, str(uuid.uuid4())))

    samples = await scrape(app)

    assert handled(samples, "GetUser", "Internal") == 1


async def test_pool_gauges_follow_an_open_transaction(app: Dedicated, tenant: str) -> None:
    transactions = transaction_pb2_grpc.TransactionServiceStub(app.channel)
    before = await scrape(app)

    began = await transactions.BeginTransaction(
        transaction_pb2.BeginTransactionRequest(), metadata=md(tenant)
    )
    during = await scrape(app)
    await transactions.Commit(
        transaction_pb2.CommitRequest(transaction_id=began.id), metadata=md(tenant)
    )
    after = await scrape(app)

    assert value(during, "repogate_db_pool_size") == 7
    assert value(during, "repogate_db_pool_overflow") == 0
    # The transaction holds a connection between its calls.
    held = value(during, "repogate_db_pool_checked_out")
    assert held is not None
    assert held >= 1
    assert value(before, "repogate_transactions_open") == 0
    assert value(during, "repogate_transactions_open") == 1
    oldest = value(during, "repogate_transactions_oldest_age_seconds")
    assert oldest is not None
    assert oldest >= 0
    assert value(after, "repogate_transactions_open") == 0
    assert value(after, "repogate_transactions_begun_total") == 1
    assert value(after, "repogate_transactions_ended_total", outcome="committed") == 1
    assert value(after, "repogate_transactions_ended_total", outcome="expired") == 0
    checked_in = value(after, "repogate_db_pool_checked_in")
    assert checked_in is not None
    assert checked_in >= 1


async def test_cache_retries_and_breakers_are_exposed(app: Dedicated, tenant: str) -> None:
    user = await create(app.users, tenant)
    await get(app.users, tenant, user.id)  # a miss
    await get(app.users, tenant, user.id)  # a hit

    samples = await scrape(app)

    assert value(samples, "repogate_cache_hits_total", backend="memory") == 1
    assert value(samples, "repogate_cache_misses_total", backend="memory") == 1
    assert value(samples, "repogate_cache_errors_total", backend="memory") == 0
    assert value(samples, "repogate_cache_evictions_total", backend="memory") == 0
    assert value(samples, "repogate_retries_total") == 0
    assert app.app.breakers
    for name in app.app.breakers:
        assert value(samples, "repogate_breaker_state", breaker=name, state="CLOSED") == 1
        assert value(samples, "repogate_breaker_state", breaker=name, state="OPEN") == 0


async def test_each_server_keeps_its_own_registry(
    start_repogate: StartRepogate, tenant: str
) -> None:
    busy = await start_repogate(metrics_listen="127.0.0.1:0")
    idle = await start_repogate(metrics_listen="127.0.0.1:0")
    await create(busy.users, tenant)

    assert handled(await scrape(busy), "CreateUser", "OK") == 1
    assert handled(await scrape(idle), "CreateUser", "OK") is None


async def test_the_endpoint_serves_only_metrics(app: Dedicated) -> None:
    assert app.app.metrics is not None

    status, body = await asyncio.to_thread(fetch, f"http://{app.app.metrics.address}/other")

    assert status == 404
    assert "/metrics" in body


async def test_the_endpoint_stops_with_the_server(app: Dedicated) -> None:
    assert app.app.metrics is not None
    url = f"http://{app.app.metrics.address}/metrics"

    await app.app.stop(0)

    with pytest.raises(urllib.error.URLError) as refused:
        await asyncio.to_thread(fetch, url)
    assert isinstance(refused.value.reason, ConnectionRefusedError)


async def test_metrics_are_off_by_default(start_repogate: StartRepogate) -> None:
    app = await start_repogate()

    assert app.app.metrics is not None
    assert app.app.metrics.address == ""
    # Nothing is registered, and calls are counted without a latency histogram.
    assert list(app.app.metrics.registry.collect()) == []
    await fails(get(app.users, "t-off", str(uuid.uuid4())))
    ((_, calls),) = app.app.calls.methods()
    assert (calls.started, calls.count, calls.bounds) == (1, 1, None)


async def test_the_workers_endpoint_labels_each_worker_and_says_which_answered() -> None:
    # As `serve --workers 3` would run it, in one process: worker 0 answers, worker 1
    # answers something that is not metrics, worker 2 is not listening (yet).
    endpoint = WorkerMetrics("127.0.0.1:0", 3)
    await endpoint.start()
    worker = Metrics(endpoint.worker_listen(0), reuse_port=True)
    Counter("repogate_things", "Things done.", registry=worker.registry).inc(2)
    await worker.start()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot this\n")
        await writer.drain()
        writer.close()

    host, _, port = endpoint.worker_listen(1).rpartition(":")
    confused = await asyncio.start_server(garbage, host, int(port), reuse_port=True)
    try:
        status, body = await asyncio.to_thread(fetch, f"http://{endpoint.address}/metrics")
    finally:
        confused.close()
        await worker.stop()
        await endpoint.stop()

    assert status == 200
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    assert value(samples, "repogate_things_total", worker="0") == 2
    assert [key for key in samples if key[0] == "repogate_things_total"] == [
        ("repogate_things_total", frozenset({("worker", "0")}))
    ]
    up = {worker: value(samples, "repogate_worker_up", worker=worker) for worker in "012"}
    assert up == {"0": 1, "1": 0, "2": 0}
