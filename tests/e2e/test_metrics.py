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

from repogate.v1 import transaction_pb2, transaction_pb2_grpc
from server.metrics import LATENCY_BUCKETS, Metrics
from server.worker_metrics import WorkerMetrics
from tests.e2e.support import Dedicated, StartRepogate, create, fails, get
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


def handled(samples: Samples, method: str, code: str) -> float | None:
    return value(
        samples, "repogate_rpc_handled_total", service=USER_SERVICE, method=method, code=code
    )


@pytest.fixture
async def app(start_repogate: StartRepogate) -> Dedicated:
    return await start_repogate(metrics_listen="127.0.0.1:0", db_pool_size=7)


async def test_calls_are_counted_by_service_method_and_code(app: Dedicated, tenant: str) -> None:
    user = await create(app.users, tenant)
    await get(app.users, tenant, user.id)
    await get(app.users, tenant, user.id)
    await fails(get(app.users, tenant, str(uuid.uuid4())))
    await health_pb2_grpc.HealthStub(app.channel).Check(health_pb2.HealthCheckRequest())

    samples = await scrape(app)

    assert handled(samples, "CreateUser", "OK") == 1
    assert handled(samples, "GetUser", "OK") == 2
    assert handled(samples, "GetUser", "NOT_FOUND") == 1
    # Only Repogate's own services are counted, not health or reflection.
    assert not [key for key in samples if ("service", "grpc.health.v1.Health") in key[1]]


async def test_latency_is_a_histogram_by_method_and_code(app: Dedicated, tenant: str) -> None:
    user = await create(app.users, tenant)
    await get(app.users, tenant, user.id)
    await get(app.users, tenant, user.id)

    samples = await scrape(app)

    labels = {"service": USER_SERVICE, "method": "GetUser", "code": "OK"}
    buckets = {
        dict(key[1])["le"]: count
        for key, count in samples.items()
        if key[0] == "repogate_rpc_duration_seconds_bucket" and set(labels.items()) < key[1]
    }
    assert set(buckets) == {*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"}
    assert buckets["+Inf"] == 2
    assert value(samples, "repogate_rpc_duration_seconds_count", **labels) == 2
    total = value(samples, "repogate_rpc_duration_seconds_sum", **labels)
    assert total is not None
    assert total > 0


async def test_server_faults_are_counted_under_their_code(
    start_repogate: StartRepogate, tenant: str
) -> None:
    # Never migrated: every Get fails with INTERNAL.
    app = await start_repogate(migrate=False, metrics_listen="127.0.0.1:0")
    await fails(get(app.users, tenant, str(uuid.uuid4())))

    samples = await scrape(app)

    assert handled(samples, "GetUser", "INTERNAL") == 1


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
    assert app.app.metrics.interceptors() == []


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
