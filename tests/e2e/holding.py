"""A transaction across calls that holds rows while a test makes another call wait on
them, for the declared resources' concurrency tests."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from repogate.v1 import transaction_pb2 as tx_pb
from repogate.v1 import transaction_pb2_grpc
from repositories.database import Database, create_engine
from tests.declared import Client
from tests.polling import eventually
from tests.rpc import md

_WAITING = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
)


async def begin(client: Client) -> Client:
    """`client`'s tenant, calling inside a new transaction."""
    stub = transaction_pb2_grpc.TransactionServiceStub(client.channel)
    began = await stub.BeginTransaction(tx_pb.BeginTransactionRequest(), metadata=md(client.tenant))
    return client.inside(began.id)


async def commit(inside: Client) -> None:
    stub = transaction_pb2_grpc.TransactionServiceStub(inside.channel)
    request = tx_pb.CommitRequest(transaction_id=inside.transaction_id)
    await stub.Commit(request, metadata=md(inside.tenant))


async def until_waiting(database_url: str) -> None:
    """Returns once a call waits on a lock: on PostgreSQL, once a backend of the database
    waits for one; SQLite shows no waiter, so after a while in which a call that did not
    wait would have finished."""
    if not database_url.startswith("postgresql"):
        await asyncio.sleep(0.2)
        return
    db = Database(create_engine(database_url))

    async def waiting() -> bool:
        async with db.engine.connect() as conn:
            return int((await conn.execute(_WAITING)).scalar_one()) > 0

    try:
        await eventually(waiting, "a call to wait on a lock")
    finally:
        await db.dispose()
