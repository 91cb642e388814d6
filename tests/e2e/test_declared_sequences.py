"""Per-parent sequence numbers under transactions that see a snapshot: two that take the
same number conflict (ABORTED, to retry), never ALREADY_EXISTS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio

from repogate.v1 import transaction_pb2 as tx_pb
from repogate.v1 import transaction_pb2_grpc
from server.app import Repogate
from server.settings import Settings
from tests.declared import TASKS, Client, message
from tests.pgbouncer import fresh_database
from tests.rpc import details, md

pytestmark = pytest.mark.e2e


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with fresh_database() as url:
        settings = Settings(
            listen="127.0.0.1:0", database_url=url, schema_path=str(TASKS), shutdown_grace=1
        )
        async with Repogate(settings) as app, aio.insecure_channel(app.address) as channel:
            yield Client(channel)


async def begin(client: Client) -> str:
    stub = transaction_pb2_grpc.TransactionServiceStub(client.channel)
    options = tx_pb.TransactionOptions(isolation_level=tx_pb.ISOLATION_LEVEL_REPEATABLE_READ)
    answer = await stub.BeginTransaction(
        tx_pb.BeginTransactionRequest(options=options), metadata=md(client.tenant)
    )
    return answer.id


async def commit(client: Client, transaction: str) -> None:
    stub = transaction_pb2_grpc.TransactionServiceStub(client.channel)
    await stub.Commit(tx_pb.CommitRequest(transaction_id=transaction), metadata=md(client.tenant))


async def test_a_number_taken_twice_under_repeatable_read_is_a_conflict(client: Client) -> None:
    project = await client.project()
    task = await client.task(project.id)
    first, second = await begin(client), await begin(client)
    # The second's snapshot is taken before the first commits.
    await client.inside(second)("TaskService/GetTask", id=task.id)
    comment = message("Comment", task_id=task.id, body="first")
    made = await client.inside(first)("CommentService/CreateComment", comment=comment)
    await commit(client, first)

    with pytest.raises(aio.AioRpcError) as error:
        await client.inside(second)("CommentService/CreateComment", comment=comment)

    assert error.value.code() == grpc.StatusCode.ABORTED, error.value.details()
    assert details(error.value).reason != "ALREADY_EXISTS"
    page = await client("CommentService/ListComments", filter=f'task_id = "{task.id}"')
    assert [(c.id, c.number) for c in page.comments] == [(made.id, 1)]
