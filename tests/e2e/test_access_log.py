"""The access log through a real server: one JSON line per call, with what it needs
to find the call again, and nothing a credential or a row could leak through."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from repogate.v1 import transaction_pb2, transaction_pb2_grpc, user_pb2
from server import access as access_log
from tests.e2e.support import Dedicated, StartRepogate, eventually, fails
from tests.e2e.test_transact import creating
from tests.e2e.test_transactions import TxStub, begin, rollback
from tests.rpc import md

pytestmark = pytest.mark.e2e

KEY = f"rg_{secrets.token_urlsafe(24)}"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


class Captured:
    """The access lines an in-process server wrote."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def access() -> Iterator[Captured]:
    captured = Captured()
    access_log.configure(True, captured.stream)
    yield captured
    access_log.configure(False)


def lines(captured: Captured) -> list[dict[str, Any]]:
    return [json.loads(text) for text in captured.text.splitlines()]


async def logged(captured: Captured, count: int) -> list[dict[str, Any]]:
    """The access lines once there are `count`: an aborted call's status reaches the
    client before the server has finished the call, and logged it."""
    await eventually(lambda: len(lines(captured)) >= count, f"{count} access log lines")
    return lines(captured)


@pytest.fixture
async def guarded(start_repogate: StartRepogate, tmp_path: Path, tenant: str) -> Dedicated:
    path = tmp_path / "keys.json"
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    path.write_text(json.dumps({"keys": {"app": {"sha256": digest, "tenants": [tenant]}}}))
    return await start_repogate(auth_mode="keys", api_keys_file=path)


async def test_a_call_is_one_json_line_with_its_ids(guarded, access, tenant) -> None:
    metadata = md(tenant, x_request_id="req-42", traceparent=TRACEPARENT)

    await guarded.users.ListUsers(
        user_pb2.ListUsersRequest(), metadata=(*metadata, ("authorization", f"ApiKey {KEY}"))
    )

    (line,) = await logged(access, 1)
    assert set(line) == {
        "time",
        "level",
        "logger",
        "method",
        "code",
        "duration_ms",
        "tenant",
        "caller",
        "peer",
        "request_id",
        "trace_id",
    }
    assert (line["level"], line["logger"]) == ("INFO", "repogate.access")
    assert line["method"] == "/repogate.v1.UserService/ListUsers"
    assert (line["code"], line["tenant"], line["request_id"]) == ("OK", tenant, "req-42")
    # The key's name in the keys file, never the key.
    assert line["caller"] == "key:app"
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    # Tracing is off: the caller's trace, and no span of the server's.
    assert line["trace_id"] == TRACE
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] >= 0
    assert line["time"].endswith("+00:00")


async def test_a_transact_call_is_logged_with_its_caller(guarded, access, tenant) -> None:
    # Transact runs its calls with the request context rebound: the caller stays.
    stub = transaction_pb2_grpc.TransactionServiceStub(guarded.channel)

    await stub.Transact(
        transaction_pb2.TransactRequest(calls=[creating("ann")]),
        metadata=(*md(tenant), ("authorization", f"ApiKey {KEY}")),
    )

    (line,) = await logged(access, 1)
    assert line["method"] == "/repogate.v1.TransactionService/Transact"
    assert (line["code"], line["caller"]) == ("OK", "key:app")


async def test_a_traced_call_logs_its_own_spans_ids(
    start_repogate: StartRepogate, access, tenant: str
) -> None:
    spans = InMemorySpanExporter()
    app = await start_repogate(span_exporter=spans)

    # One call joins its caller's trace, one starts a trace of its own.
    await app.users.ListUsers(
        user_pb2.ListUsersRequest(), metadata=md(tenant, traceparent=TRACEPARENT)
    )
    await app.users.ListUsers(user_pb2.ListUsersRequest(), metadata=md(tenant))

    lines = await logged(access, 2)
    ids = {
        (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
        for span in spans.get_finished_spans()
        if span.name == "repogate.v1.UserService/ListUsers"
    }
    assert {(line["trace_id"], line["span_id"]) for line in lines} == ids
    assert lines[0]["trace_id"] == TRACE
    assert lines[1]["trace_id"] != TRACE
    assert "caller" not in lines[0]  # authentication is off


async def test_refused_calls_are_logged_without_the_credential(guarded, access, tenant) -> None:
    for authorization in (f"ApiKey {KEY}x", f"Bearer {KEY}", None):
        metadata = md(f"{tenant}-other")
        if authorization is not None:
            metadata += (("authorization", authorization),)
        await fails(guarded.users.ListUsers(user_pb2.ListUsersRequest(), metadata=metadata))

    assert [line["code"] for line in await logged(access, 3)] == [
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
    ]
    assert KEY not in access.text
    assert "authorization" not in access.text.lower()


async def test_no_row_data_is_logged(guarded, access, tenant) -> None:
    auth = ("authorization", f"ApiKey {KEY}")
    created = await guarded.users.CreateUser(
        user_pb2.CreateUserRequest(
            user=user_pb2.User(email="private@example.com", username="private-name")
        ),
        metadata=(*md(tenant), auth),
    )

    await guarded.users.GetUser(
        user_pb2.GetUserRequest(id=created.id), metadata=(*md(tenant), auth)
    )

    logged_lines = await logged(access, 2)
    assert [line["method"].rsplit("/", 1)[1] for line in logged_lines] == ["CreateUser", "GetUser"]
    for secret in ("private@example.com", "private-name", created.id):
        assert secret not in access.text


async def test_the_transaction_id_is_logged(
    start_repogate: StartRepogate, access, tenant: str
) -> None:
    app = await start_repogate()
    tx = await begin(TxStub(app.channel), tenant)

    await app.users.ListUsers(
        user_pb2.ListUsersRequest(), metadata=md(tenant, x_transaction_id=tx.id)
    )
    await rollback(TxStub(app.channel), tenant, tx)

    listed = [line for line in await logged(access, 3) if line["method"].endswith("/ListUsers")]
    assert [line["transaction_id"] for line in listed] == [tx.id]


async def test_a_call_refused_before_it_runs_is_logged_too(
    start_repogate: StartRepogate, access
) -> None:
    app = await start_repogate()

    error = await fails(
        app.users.ListUsers(user_pb2.ListUsersRequest(), metadata=md(None, traceparent="junk"))
    )

    (line,) = await logged(access, 1)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert line["code"] == "INVALID_ARGUMENT"
    assert "tenant" not in line
    assert "trace_id" not in line


async def test_health_checks_are_not_logged(start_repogate: StartRepogate, access) -> None:
    app = await start_repogate()

    await health_pb2_grpc.HealthStub(app.channel).Check(health_pb2.HealthCheckRequest())
    # A call that is logged, after the check: had the check been logged, it would be first.
    await fails(app.users.ListUsers(user_pb2.ListUsersRequest(), metadata=md(None)))

    (line,) = await logged(access, 1)
    assert line["method"] == "/repogate.v1.UserService/ListUsers"
