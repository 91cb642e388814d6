"""Tracing through a real server: spans caught by an in-memory exporter, by stdout,
and by an OTLP collector served in the test."""

from __future__ import annotations

import json
import uuid

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.engine import make_url

from repogate.v1 import cache_pb2, cache_pb2_grpc, user_pb2
from server.cache.memory import MemoryBackend
from tests.cache_support import CLOSED_REDIS_URL, REDIS_URL, require_redis
from tests.e2e.otlp_collector import Collector
from tests.e2e.support import Dedicated, StartRepogate, create, fails, get
from tests.polling import eventually
from tests.rpc import md

pytestmark = pytest.mark.e2e

GET_USER = "repogate.v1.UserService/GetUser"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def finished(spans: InMemorySpanExporter, name: str, count: int = 1) -> list[ReadableSpan]:
    """The spans named `name` once there are `count`: an aborted call's status reaches
    the client before its span ends."""

    def found() -> list[ReadableSpan]:
        return [span for span in spans.get_finished_spans() if span.name == name]

    await eventually(lambda: len(found()) >= count, f"{count} span(s) named {name}")
    return found()


def children(spans: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    return [
        span
        for span in spans.get_finished_spans()
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


# The call's span


async def test_a_call_joins_the_callers_trace(
    start_repogate: StartRepogate, spans: InMemorySpanExporter, tenant: str
) -> None:
    app = await start_repogate(span_exporter=spans)
    user = await create(app.users, tenant)

    await app.users.GetUser(
        user_pb2.GetUserRequest(id=user.id),
        metadata=md(tenant, traceparent=TRACEPARENT, tracestate="vendor=abc"),
    )

    [span] = await finished(spans, GET_USER)
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert span.parent is not None
    assert span.parent.span_id == int(CALLER_SPAN_ID, 16)
    assert span.parent.is_remote
    assert span.context.trace_state.get("vendor") == "abc"


async def test_a_call_without_traceparent_starts_a_trace(
    start_repogate: StartRepogate, spans: InMemorySpanExporter, tenant: str
) -> None:
    app = await start_repogate(span_exporter=spans)
    user = await create(app.users, tenant)

    await get(app.users, tenant, user.id)

    [span] = await finished(spans, GET_USER)
    assert span.parent is None
    assert span.context.trace_id != int(TRACE_ID, 16)


async def test_a_call_the_caller_did_not_sample_records_no_span_at_all(
    start_repogate: StartRepogate, spans: InMemorySpanExporter, database_url: str, tenant: str
) -> None:
    # Cache off: the Get runs a statement, which would have a span of its own.
    app = await start_repogate(span_exporter=spans, database_url=database_url, cache_entities=False)
    user = await create(app.users, tenant)
    spans.clear()

    unsampled = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-00"
    got = await app.users.GetUser(
        user_pb2.GetUserRequest(id=user.id), metadata=md(tenant, traceparent=unsampled)
    )
    # A sampled call after it: its spans show that the unsampled one's would be there by now.
    await app.users.GetUser(
        user_pb2.GetUserRequest(id=user.id), metadata=md(tenant, traceparent=TRACEPARENT)
    )

    assert got.id == user.id
    [span] = await finished(spans, GET_USER)
    assert span.context.trace_id == int(TRACE_ID, 16)
    # Every span there is belongs to the sampled call: its own, and its statements'.
    others = [s for s in spans.get_finished_spans() if s is not span]
    assert "SELECT users" in {s.name for s in others}
    assert others == children(spans, span)


async def test_a_calls_span_carries_the_rpc_conventions_and_the_tenant(
    start_repogate: StartRepogate, spans: InMemorySpanExporter, tenant: str
) -> None:
    app = await start_repogate(span_exporter=spans)
    user = await create(app.users, tenant)

    await get(app.users, tenant, user.id)

    [span] = await finished(spans, GET_USER)
    assert span.kind == SpanKind.SERVER
    # The channel's local port: the peer the server saw.
    attributes = dict(span.attributes or {})
    peer_port = attributes.pop("network.peer.port")
    assert isinstance(peer_port, int)
    assert peer_port > 0
    host, port = app.app.address.rsplit(":", 1)
    assert attributes == {
        "rpc.system": "grpc",
        "rpc.service": "repogate.v1.UserService",
        "rpc.method": "GetUser",
        "rpc.grpc.status_code": 0,
        "server.address": host,
        "server.port": int(port),
        "network.peer.address": "127.0.0.1",
        "repogate.tenant": tenant,
    }
    assert span.status.status_code == StatusCode.UNSET
    assert span.resource.attributes["service.name"] == "repogate"


@pytest.mark.parametrize(
    ("id_", "code"),
    [
        (str(uuid.UUID(int=1)), grpc.StatusCode.NOT_FOUND),
        ("not-a-uuid", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_a_callers_error_is_recorded_but_not_marked_as_a_failure(
    start_repogate: StartRepogate,
    spans: InMemorySpanExporter,
    tenant: str,
    id_: str,
    code: grpc.StatusCode,
) -> None:
    app = await start_repogate(span_exporter=spans)

    error = await fails(get(app.users, tenant, id_))

    [span] = await finished(spans, GET_USER)
    assert error.code == code
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == code.value[0]
    assert span.status.status_code == StatusCode.UNSET


async def test_an_invalid_tenant_is_left_out_of_the_span(
    start_repogate: StartRepogate, spans: InMemorySpanExporter
) -> None:
    app = await start_repogate(span_exporter=spans)

    error = await fails(get(app.users, "no spaces allowed", str(uuid.uuid4())))

    [span] = await finished(spans, GET_USER)
    assert error.reason == "INVALID_TENANT"
    assert span.attributes is not None
    assert "repogate.tenant" not in span.attributes


async def test_an_internal_error_marks_the_span_and_its_failed_statement(
    start_repogate: StartRepogate, spans: InMemorySpanExporter, tenant: str
) -> None:
    # Never migrated: the users table is missing, so the SELECT fails.
    app = await start_repogate(migrate=False, span_exporter=spans)

    error = await fails(get(app.users, tenant, str(uuid.uuid4())))

    [span] = await finished(spans, GET_USER)
    assert error.code == grpc.StatusCode.INTERNAL
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description is not None
    assert span.status.description.startswith("INTERNAL: ")
    assert error.metadata["request_id"] in span.status.description
    [select] = [s for s in children(spans, span) if s.name == "SELECT users"]
    assert select.status.status_code == StatusCode.ERROR
    assert select.status.description == "OperationalError"  # no driver message, no SQL


async def test_an_unreachable_redis_marks_the_span_and_its_cache_call(
    start_repogate: StartRepogate, spans: InMemorySpanExporter, tenant: str
) -> None:
    app = await start_repogate(span_exporter=spans, redis_url=CLOSED_REDIS_URL)
    stub = cache_pb2_grpc.CacheServiceStub(app.channel)

    error = await fails(stub.Get(cache_pb2.GetRequest(key="k"), metadata=md(tenant)))

    [span] = await finished(spans, "repogate.v1.CacheService/Get")
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description is not None
    assert span.status.description.startswith("UNAVAILABLE: ")
    [call] = children(spans, span)
    assert call.name == "GET"
    assert call.kind == SpanKind.CLIENT
    assert call.status.status_code == StatusCode.ERROR
    assert call.attributes is not None
    assert call.attributes["repogate.cache.backend"] == "redis"
    assert call.attributes["db.system"] == "redis"


# Child spans


async def test_each_statement_is_a_child_span_without_its_values(
    start_repogate: StartRepogate,
    spans: InMemorySpanExporter,
    database_url: str,
    backend: str,
    tenant: str,
) -> None:
    # Entity caching off: every Get reads the database.
    app = await start_repogate(span_exporter=spans, database_url=database_url, cache_entities=False)
    user = await create(app.users, tenant)

    await get(app.users, tenant, user.id)

    [span] = await finished(spans, GET_USER)
    # Named as the conventions name a statement's span: operation and table.
    [select] = [s for s in children(spans, span) if s.name == "SELECT users"]
    assert select.kind == SpanKind.CLIENT
    assert select.context.trace_id == span.context.trace_id
    assert select.attributes is not None
    assert select.attributes["db.system"] == backend
    assert select.attributes["db.operation"] == "SELECT"
    assert select.attributes["db.sql.table"] == "users"
    url = make_url(database_url)
    assert select.attributes["db.namespace"] == url.database
    assert select.attributes["db.name"] == url.database
    if backend == "postgresql":
        assert select.attributes["server.address"] == url.host
        assert select.attributes["server.port"] == (url.port or 5432)
    else:
        assert "server.address" not in select.attributes
    statement = str(select.attributes["db.statement"])
    assert statement.startswith("SELECT ")
    assert "\n" not in statement
    for value in (user.id, uuid.UUID(user.id).hex, tenant, user.email):
        assert value not in statement


async def test_each_cache_call_is_a_child_span(
    start_repogate: StartRepogate, spans: InMemorySpanExporter, tenant: str
) -> None:
    app = await start_repogate(span_exporter=spans)
    user = await create(app.users, tenant)
    await get(app.users, tenant, user.id)  # a miss, which fills the cache

    await get(app.users, tenant, user.id)

    first, second = await finished(spans, GET_USER, 2)
    assert {s.name for s in children(spans, first)} >= {
        "cache get",
        "SELECT users",
        "cache set_if_newer",
    }
    [lookup] = children(spans, second)  # the hit: no statement
    assert lookup.name == "cache get"
    assert lookup.kind == SpanKind.INTERNAL
    assert dict(lookup.attributes or {}) == {
        "repogate.cache.operation": "get",
        "repogate.cache.backend": "memory",
        "repogate.cache.keys": 1,
        "repogate.cache.hits": 1,
    }


async def test_redis_calls_carry_the_redis_conventions(
    start_repogate: StartRepogate, spans: InMemorySpanExporter, tenant: str
) -> None:
    await require_redis()
    app = await start_repogate(span_exporter=spans, redis_url=REDIS_URL)
    user = await create(app.users, tenant)
    await get(app.users, tenant, user.id)  # a miss, which fills the cache

    await get(app.users, tenant, user.id)

    first, second = await finished(spans, GET_USER, 2)
    assert {s.name for s in children(spans, first)} >= {"GET", "SELECT users", "EVALSHA"}
    [lookup] = children(spans, second)  # the hit: no statement
    url = make_url(REDIS_URL)
    assert lookup.name == "GET"
    assert lookup.kind == SpanKind.CLIENT
    assert dict(lookup.attributes or {}) == {
        "db.system": "redis",
        "db.operation": "GET",
        "db.redis.database_index": int(url.database or 0),
        "server.address": url.host,
        "server.port": url.port or 6379,
        "repogate.cache.operation": "get",
        "repogate.cache.backend": "redis",
        "repogate.cache.keys": 1,
        "repogate.cache.hits": 1,
    }


async def test_cache_service_calls_get_cache_spans(
    start_repogate: StartRepogate, spans: InMemorySpanExporter, tenant: str
) -> None:
    app = await start_repogate(span_exporter=spans)
    stub = cache_pb2_grpc.CacheServiceStub(app.channel)

    await stub.Set(cache_pb2.SetRequest(key="k", value=b"v"), metadata=md(tenant))

    [span] = await finished(spans, "repogate.v1.CacheService/Set")
    assert [s.name for s in children(spans, span)] == ["cache set"]


# Exporters


async def test_tracing_is_off_by_default(start_repogate: StartRepogate) -> None:
    app = await start_repogate()

    assert app.app.tracing is not None
    assert app.app.tracing.provider is None
    assert app.app.tracing.calls() is None
    assert type(app.app.cache) is MemoryBackend  # not wrapped


async def test_the_console_exporter_writes_a_line_per_span(
    start_repogate: StartRepogate, capsys: pytest.CaptureFixture[str], tenant: str
) -> None:
    app = await start_repogate(trace_exporter="console")
    user = await create(app.users, tenant)
    await get(app.users, tenant, user.id)

    await app.app.stop(0)  # flushes

    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    names = [json.loads(line)["name"] for line in lines]
    assert GET_USER in names
    assert "SELECT users" in names


async def test_the_otlp_exporter_sends_spans_to_the_collector(
    start_repogate: StartRepogate, collector: tuple[Collector, str], tenant: str
) -> None:
    kept, endpoint = collector
    app = await start_repogate(trace_exporter="otlp", otlp_endpoint=endpoint)
    user = await create(app.users, tenant)
    await get(app.users, tenant, user.id)

    await app.app.stop(0)  # flushes

    assert GET_USER in kept.names
    assert "repogate.v1.UserService/CreateUser" in kept.names
    assert kept.services == {"repogate"}


# Keeping a share of new traces (OTEL_TRACES_SAMPLER=parentbased_traceidratio)


async def keeping(
    ratio: str,
    start_repogate: StartRepogate,
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> Dedicated:
    """A server keeping `ratio` of new traces."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", ratio)
    return await start_repogate(span_exporter=spans)


async def test_a_ratio_of_zero_traces_no_new_trace_but_follows_a_sampled_caller(
    start_repogate: StartRepogate,
    spans: InMemorySpanExporter,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = await keeping("0", start_repogate, spans, monkeypatch)
    user = await create(app.users, tenant)
    await get(app.users, tenant, user.id)
    # A traceparent that does not parse starts a new trace too.
    await app.users.GetUser(
        user_pb2.GetUserRequest(id=user.id), metadata=md(tenant, traceparent="junk")
    )

    await app.users.GetUser(
        user_pb2.GetUserRequest(id=user.id), metadata=md(tenant, traceparent=TRACEPARENT)
    )

    [span] = await finished(spans, GET_USER)
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert [s.name for s in spans.get_finished_spans() if s.parent is None] == []


async def test_a_ratio_of_one_traces_every_new_trace(
    start_repogate: StartRepogate,
    spans: InMemorySpanExporter,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = await keeping("1", start_repogate, spans, monkeypatch)
    user = await create(app.users, tenant)

    await get(app.users, tenant, user.id)

    [span] = await finished(spans, GET_USER)
    assert span.parent is None
