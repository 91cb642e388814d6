from __future__ import annotations

import grpc
import pytest
from grpc import aio

from repogate.v1 import user_pb2
from tests.rpc import details, md

pytestmark = pytest.mark.e2e


async def test_create_then_get(users, tenant: str) -> None:
    created = await users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(email="ann@example.com", username="ann")),
        metadata=md(tenant),
    )
    got = await users.GetUser(user_pb2.GetUserRequest(id=created.id), metadata=md(tenant))
    assert got == created
    assert got.is_active
    assert got.etag
    assert got.create_time.seconds > 0


async def test_other_tenant_sees_not_found(users, tenant: str) -> None:
    created = await users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(email="bob@example.com", username="bob")),
        metadata=md(tenant),
    )
    with pytest.raises(aio.AioRpcError) as err:
        await users.GetUser(user_pb2.GetUserRequest(id=created.id), metadata=md(tenant + "x"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(err.value).reason == "RESOURCE_NOT_FOUND"
