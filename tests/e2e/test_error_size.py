"""Errors echo a bounded amount of what the client sent: a 10,000-character update_mask
path still comes back as an AIP-193 error the client can read, with its trailers well
under gRPC's default 8 KiB metadata limit."""

from __future__ import annotations

import base64

import grpc
import pytest
from grpc import aio

from repogate.v1 import user_pb2
from tests.e2e.support import create, update_request
from tests.rpc import details, md

pytestmark = pytest.mark.e2e

# Half of gRPC's default limit on received metadata (8 KiB).
BUDGET = 4096
LONG = 10_000


def trailer_bytes(error: aio.AioRpcError) -> int:
    """What the trailers weigh on the wire: binary values travel base64-encoded, and
    grpc-message percent-encoded (every byte outside printable ASCII as three)."""
    total = 0
    for key, value in error.trailing_metadata() or ():
        raw = value if isinstance(value, bytes) else value.encode()
        total += len(key) + len(base64.b64encode(raw) if key.endswith("-bin") else raw)
    message = (error.details() or "").encode()
    return total + sum(1 if 0x20 <= b < 0x7F and b != 0x25 else 3 for b in message)


async def refused(call) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as err:
        await call
    return err.value


@pytest.mark.parametrize("char", ["x", "é", "\U0001f600"], ids=["ascii", "two-bytes", "four-bytes"])
async def test_a_huge_update_mask_path_is_an_error_the_client_can_read(
    users, tenant: str, char: str
) -> None:
    user = await create(users, tenant)
    path = char * LONG
    request = update_request(user_pb2.User(id=user.id, display_name="x"), [path])

    error = await refused(users.UpdateUser(request, metadata=md(tenant, x_request_id="req-big")))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    found = details(error)
    assert found.reason == "INVALID_ARGUMENT"
    assert found.metadata["request_id"] == "req-big"
    assert list(found.violations) == ["update_mask"]
    # Cut short, and said to be: the start of the path is still there to recognise.
    assert found.violations["update_mask"].startswith(f"'{char * 10}")
    assert "…" in found.violations["update_mask"]
    assert "…" in found.message
    assert trailer_bytes(error) < BUDGET


async def test_short_errors_are_echoed_whole(users, tenant: str) -> None:
    user = await create(users, tenant)
    request = update_request(user_pb2.User(id=user.id, display_name="x"), ["nickname"])

    found = details(await refused(users.UpdateUser(request, metadata=md(tenant))))

    assert found.violations["update_mask"] == (
        "'nickname' is not an updatable field "
        "(updatable: display_name, email, is_active, username, or *)"
    )
    assert "…" not in found.message
