"""The server around the service: internal errors, message limits, health,
reflection and graceful stop."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from repogate.v1 import job_pb2, message_pb2, session_pb2, user_pb2, user_pb2_grpc
from server.served import LIVENESS, READINESS
from tests.e2e.support import StartRepogate, create, fails, get, list_page, update
from tests.polling import eventually
from tests.row_locks import user_locked
from tests.rpc import details, md

pytestmark = pytest.mark.e2e

USER_SERVICE = "repogate.v1.UserService"
TRANSACTION_SERVICE = "repogate.v1.TransactionService"
CACHE_SERVICE = "repogate.v1.CacheService"
ADMIN_SERVICE = "repogate.v1.AdminService"
DOMAIN_SERVICES = {
    "repogate.v1.SessionService": session_pb2,
    "repogate.v1.MessageService": message_pb2,
    "repogate.v1.JobService": job_pb2,
}
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Bounds waits for a condition; not a timing assertion: reaching it fails the test.
PATIENCE_S = 15.0


# INTERNAL


@pytest.fixture
async def schemaless(start_repogate: StartRepogate):
    """A Repogate on a fresh SQLite file that was never migrated: no users table."""
    return await start_repogate(migrate=False)


def _internal_calls() -> dict[str, Callable[..., Awaitable[object]]]:
    some_id = str(uuid.uuid4())
    return {
        "GetUser": lambda s, m: s.GetUser(user_pb2.GetUserRequest(id=some_id), metadata=m),
        "ListUsers": lambda s, m: s.ListUsers(user_pb2.ListUsersRequest(), metadata=m),
        "CreateUser": lambda s, m: s.CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(email="a@x.com", username="a")),
            metadata=m,
        ),
        "UpdateUser": lambda s, m: s.UpdateUser(
            user_pb2.UpdateUserRequest(user=user_pb2.User(id=some_id, display_name="x")),
            metadata=m,
        ),
        "DeleteUser": lambda s, m: s.DeleteUser(user_pb2.DeleteUserRequest(id=some_id), metadata=m),
    }


LEAKS = ("users", "select", "insert", "update ", "delete ", "no such table", "sqlite", "sqlalchemy")


def assert_opaque_internal(error) -> None:
    assert error.code == grpc.StatusCode.INTERNAL
    assert error.reason == "INTERNAL_ERROR"
    assert error.violations == {}
    assert set(error.metadata) == {"request_id"}
    assert error.metadata["request_id"]
    assert error.metadata["request_id"] in error.message
    for leak in LEAKS:
        assert leak not in error.message.lower(), error.message


async def test_get_on_a_broken_database_is_an_opaque_internal_error(schemaless, tenant) -> None:
    error = await fails(get(schemaless.users, tenant, str(uuid.uuid4())))

    assert_opaque_internal(error)


@pytest.mark.parametrize("rpc", ["CreateUser", "ListUsers", "UpdateUser", "DeleteUser"])
async def test_every_method_on_a_broken_database_is_an_opaque_internal_error(
    schemaless, tenant, rpc: str
) -> None:
    error = await fails(_internal_calls()[rpc](schemaless.users, md(tenant)))

    assert_opaque_internal(error)


async def test_internal_error_echoes_the_request_id_and_logs_the_cause(
    schemaless, tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="repogate.rpc")

    error = await fails(
        schemaless.users.GetUser(
            user_pb2.GetUserRequest(id=str(uuid.uuid4())),
            metadata=md(tenant, x_request_id="abc-123"),
        )
    )

    assert_opaque_internal(error)
    assert error.metadata["request_id"] == "abc-123"
    # What the client does not see is in the server log, under the same request id.
    logged = [r for r in caplog.records if "abc-123" in r.getMessage()]
    assert logged, [r.getMessage() for r in caplog.records]
    assert logged[0].exc_info is not None
    assert "no such table" in str(logged[0].exc_info[1]).lower()


async def test_each_internal_error_gets_its_own_request_id(schemaless, tenant) -> None:
    ids = {
        (await fails(get(schemaless.users, tenant, str(uuid.uuid4())))).metadata["request_id"]
        for _ in range(3)
    }

    assert len(ids) == 3


async def test_validation_still_answers_on_a_broken_database(schemaless, tenant) -> None:
    # Checks that need no database keep their own status, not INTERNAL.
    assert (await fails(get(schemaless.users, tenant, "nope"))).reason == "INVALID_ARGUMENT"
    assert (await fails(get(schemaless.users, None, str(uuid.uuid4())))).reason == (
        "INVALID_TENANT"
    )


# Message size


@pytest.mark.parametrize("field", ["display_name", "email", "username"])
async def test_oversized_request_is_resource_exhausted_and_the_server_carries_on(
    start_repogate: StartRepogate, tenant: str, field: str
) -> None:
    small = await start_repogate(max_message_bytes=1024)
    big = {"display_name": "d" * 4096, "email": "e" * 4096 + "@x.com", "username": "u" * 4096}

    with pytest.raises(aio.AioRpcError) as err:
        await create(small.users, tenant, **{"username": "big", field: big[field]})

    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert list((await list_page(small.users, tenant)).users) == []
    # The same channel and server still serve requests within the limit.
    created = await create(small.users, tenant, username="small", display_name="d" * 200)
    assert await get(small.users, tenant, created.id) == created


async def test_request_just_under_the_limit_is_served(
    start_repogate: StartRepogate, tenant: str
) -> None:
    small = await start_repogate(max_message_bytes=1024)
    request = user_pb2.CreateUserRequest(
        user=user_pb2.User(email="a@x.com", username="a", display_name="d" * 256)
    )
    assert request.ByteSize() < 1024

    created = await small.users.CreateUser(request, metadata=md(tenant))

    assert created.display_name == "d" * 256


# Health


async def _check(channel: aio.Channel, service: str) -> health_pb2.HealthCheckResponse:
    stub = health_pb2_grpc.HealthStub(channel)
    return await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)


@pytest.mark.parametrize("service", ["", USER_SERVICE, LIVENESS, READINESS])
async def test_health_reports_serving(server, service: str) -> None:
    response = await _check(server.channel, service)

    assert response.status == SERVING


@pytest.mark.parametrize("service", ["nope", "repogate.v1.GroupService", "repogate.v1"])
async def test_health_of_an_unknown_service_is_not_found(server, service: str) -> None:
    with pytest.raises(aio.AioRpcError) as err:
        await _check(server.channel, service)

    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_needs_no_tenant(server) -> None:
    stub = health_pb2_grpc.HealthStub(server.channel)

    response = await stub.Check(health_pb2.HealthCheckRequest(), metadata=md("a b"), timeout=5)

    assert response.status == SERVING


async def test_accepting_a_call_waits_on_one_pending_request_not_one_per_method(
    server, tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    # grpc.aio keeps a pending request per registered method and asyncio.waits on
    # them all for every call it accepts (server/handlers.py). Watch what it waits on.
    waited: list[int] = []
    wait = asyncio.wait

    async def watched(fs: Any, *args: Any, **kwargs: Any) -> Any:
        fs = list(fs)
        waited.append(len(fs))
        return await wait(fs, *args, **kwargs)

    monkeypatch.setattr(asyncio, "wait", watched)
    users = user_pb2_grpc.UserServiceStub(server.channel)
    user = await create(users, tenant)
    for _ in range(5):
        assert (await get(users, tenant, user.id)).id == user.id

    assert max(waited, default=0) <= 1, waited


async def test_stop_turns_health_to_not_serving_then_closes(
    start_repogate: StartRepogate,
) -> None:
    running = await start_repogate()
    stub = health_pb2_grpc.HealthStub(running.channel)
    watches = {
        service: stub.Watch(health_pb2.HealthCheckRequest(service=service))
        for service in ("", USER_SERVICE, LIVENESS, READINESS)
    }
    for watch in watches.values():
        assert (await watch.read()).status == SERVING

    stopping = asyncio.create_task(running.app.stop(grace=PATIENCE_S))
    for service, watch in watches.items():
        assert (await watch.read()).status == NOT_SERVING, service
        watch.cancel()  # an open watch is an in-flight call the stop would wait for
    await stopping

    with pytest.raises(aio.AioRpcError) as err:
        await _check(running.channel, "")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_stop_is_idempotent(start_repogate: StartRepogate) -> None:
    running = await start_repogate()

    await running.app.stop(0)
    await running.app.stop(0)

    with pytest.raises(aio.AioRpcError) as err:
        await _check(running.channel, "")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


# Reflection


async def _reflect(
    channel: aio.Channel, *requests: reflection_pb2.ServerReflectionRequest
) -> list[reflection_pb2.ServerReflectionResponse]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter(requests), timeout=5)
    return [response async for response in call]


async def test_reflection_lists_the_services(server) -> None:
    (response,) = await _reflect(
        server.channel, reflection_pb2.ServerReflectionRequest(list_services="")
    )

    names = {s.name for s in response.list_services_response.service}
    assert names == {
        USER_SERVICE,
        TRANSACTION_SERVICE,
        CACHE_SERVICE,
        ADMIN_SERVICE,
        *DOMAIN_SERVICES,
        HEALTH_SERVICE,
        REFLECTION_SERVICE,
    }


@pytest.mark.parametrize("service", sorted(DOMAIN_SERVICES))
async def test_reflection_describes_every_method_of_the_domain_services(
    server, service: str
) -> None:
    (response,) = await _reflect(
        server.channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
    )

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    module = DOMAIN_SERVICES[service]
    (described,) = [f for f in files if f.name == module.DESCRIPTOR.name]
    (served,) = described.service
    name = service.rsplit(".", 1)[1]
    assert {m.name for m in served.method} == set(
        module.DESCRIPTOR.services_by_name[name].methods_by_name
    )


async def test_reflection_describes_the_user_service(server) -> None:
    (response,) = await _reflect(
        server.channel,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=USER_SERVICE),
    )

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    (user_file,) = [f for f in files if f.name == "repogate/v1/user.proto"]
    assert "repogate/v1/query.proto" in {f.name for f in files}  # its dependency
    (service,) = user_file.service
    assert service.name == "UserService"
    served = {m.name for m in service.method}
    assert served == set(user_pb2.DESCRIPTOR.services_by_name["UserService"].methods_by_name)
    assert served >= {"CreateUser", "GetUser", "ListUsers", "UpdateUser", "DeleteUser"}
    assert {m.name for m in user_file.message_type} >= {"User", "ListUsersRequest"}


async def test_reflection_of_an_unknown_symbol_is_not_found(server) -> None:
    (response,) = await _reflect(
        server.channel,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="repogate.v1.Nope"),
    )

    assert response.HasField("error_response")
    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_reflection_answers_several_requests_on_one_stream(server) -> None:
    responses = await _reflect(
        server.channel,
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="repogate.v1.User"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=HEALTH_SERVICE),
    )

    assert [r.WhichOneof("message_response") for r in responses] == [
        "list_services_response",
        "file_descriptor_response",
        "file_descriptor_response",
    ]


# Graceful stop


async def test_stop_drains_an_in_flight_call(
    start_repogate: StartRepogate, postgresql_url: str, tenant: str
) -> None:
    """A call that started before stop() finishes, and its write lands, while new calls
    are refused with UNAVAILABLE `SHUTTING_DOWN` and health says NOT_SERVING.

    PostgreSQL makes it deterministic: a row lock taken here holds the server's
    UPDATE while the stop begins, and pg_stat_activity shows when it is waiting.
    """
    running = await start_repogate(database_url=postgresql_url)
    created = await create(running.users, tenant, username="drained")
    async with user_locked(postgresql_url, tenant, created.id) as lock:
        in_flight = asyncio.ensure_future(
            update(running.users, tenant, user_pb2.User(id=created.id, display_name="landed"))
        )

        async def update_is_waiting_for_the_lock() -> bool:
            # The only backend this connection's lock can block is the server's UPDATE.
            return await lock.blocked() > 0

        await eventually(update_is_waiting_for_the_lock, "the UPDATE to wait for the row lock")

        stopping = asyncio.create_task(running.app.stop(grace=PATIENCE_S * 2))

        refused: list[aio.AioRpcError] = []

        async def new_calls_are_refused() -> bool:
            try:
                await get(running.users, tenant, created.id)
            except aio.AioRpcError as exc:
                refused.append(exc)
                return True
            return False

        await eventually(new_calls_are_refused, "the server to refuse new calls")
        assert not in_flight.done()
        assert not stopping.done()
        error = details(refused[-1])
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN")
        assert (await _check(running.channel, "")).status == NOT_SERVING

        await lock.release()
        updated = await in_flight
        await stopping

        assert updated.display_name == "landed"
        assert await lock.display_name() == "landed"
