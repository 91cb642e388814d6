"""Transact: a list of calls applied atomically in one round trip."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from repogate.v1 import transaction_pb2 as pb
from repogate.v1 import user_pb2
from tests.e2e.support import Stub, all_users, create, fails
from tests.e2e.test_transactions import TxStub, begin, inside, rollback
from tests.rpc import md

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT
CREATE = "repogate.v1.UserService/CreateUser"
UPDATE = "repogate.v1.UserService/UpdateUser"


def call(method: str, request: Message) -> pb.TransactCall:
    packed = any_pb2.Any()
    packed.Pack(request)
    return pb.TransactCall(method=method, request=packed)


def creating(name: str, email: str | None = None) -> pb.TransactCall:
    user = user_pb2.User(email=email or f"{name}@example.com", username=name)
    return call(CREATE, user_pb2.CreateUserRequest(user=user))


async def transact(stub: TxStub, tenant: str, *calls: pb.TransactCall) -> pb.TransactResponse:
    return await stub.Transact(pb.TransactRequest(calls=calls), metadata=md(tenant))


@pytest.fixture
def txs(server) -> TxStub:  # type: ignore[no-untyped-def]
    return TxStub(server.channel)


async def test_every_call_commits_together(txs: TxStub, users: Stub, tenant: str) -> None:
    ann = await create(users, tenant, username="ann")
    rename = user_pb2.UpdateUserRequest(user=user_pb2.User(id=ann.id, display_name="Ann"))

    response = await transact(
        txs, tenant, creating("bob"), call("/" + UPDATE, rename), creating("cy")
    )

    results = []
    for packed in response.responses:
        user = user_pb2.User()
        assert packed.Unpack(user)
        results.append(user)
    assert [u.username for u in results] == ["bob", "ann", "cy"]
    assert results[1].display_name == "Ann"
    assert sorted(u.username for u in await all_users(users, tenant)) == ["ann", "bob", "cy"]
    assert response.HasField("commit_time")


async def test_one_failing_call_writes_nothing_and_is_named(
    txs: TxStub, users: Stub, tenant: str
) -> None:
    error = await fails(transact(txs, tenant, creating("ann"), creating("bob"), creating("ann")))

    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "RESOURCE_ALREADY_EXISTS")
    assert error.metadata["call_index"] == "2"
    assert error.message.startswith("calls[2]: ")
    assert await all_users(users, tenant) == []


async def test_a_bad_field_in_a_call_names_the_call_and_the_field(
    txs: TxStub, users: Stub, tenant: str
) -> None:
    error = await fails(transact(txs, tenant, creating("ann"), creating("bob", "not-an-email")))

    assert error.code == INVALID
    assert list(error.violations) == ["calls[1].request.user.email"]
    assert await all_users(users, tenant) == []


@pytest.mark.parametrize(
    ("calls", "field"),
    [
        ([], "calls"),
        ([creating(f"u{i}") for i in range(101)], "calls"),
        ([call("repogate.v1.UserService/Nope", user_pb2.GetUserRequest())], "calls[0].method"),
        (
            [call("repogate.v1.TransactionService/BeginTransaction", pb.BeginTransactionRequest())],
            "calls[0].method",
        ),
        ([creating("ann"), call(CREATE, user_pb2.GetUserRequest())], "calls[1].request"),
    ],
)
async def test_malformed_calls_are_refused_before_anything_runs(
    txs: TxStub, users: Stub, tenant: str, calls: list[pb.TransactCall], field: str
) -> None:
    error = await fails(transact(txs, tenant, *calls))

    assert error.code == INVALID
    assert field in error.violations
    assert await all_users(users, tenant) == []


async def test_transact_does_not_run_inside_another_transaction(
    txs: TxStub, users: Stub, tenant: str
) -> None:
    tx = await begin(txs, tenant)
    error = await fails(
        txs.Transact(pb.TransactRequest(calls=[creating("ann")]), metadata=inside(tenant, tx))
    )
    await rollback(txs, tenant, tx)

    assert error.code == INVALID
    assert "x-transaction-id" in error.violations
    assert await all_users(users, tenant) == []


async def test_transact_leaves_no_transaction_open(txs: TxStub, server, tenant: str) -> None:  # type: ignore[no-untyped-def]
    transactions = server.app.units.transactions
    before = transactions.stats().outcomes

    await transact(txs, tenant, creating("ann"))
    await fails(transact(txs, tenant, creating("bob"), creating("bob")))

    after = transactions.stats().outcomes
    assert transactions.stats().open == 0
    assert after["COMMITTED"] - before.get("COMMITTED", 0) == 1
    assert after["ROLLED_BACK"] - before.get("ROLLED_BACK", 0) == 1
