"""A write whose answer the server could not send writes nothing.

gRPC refuses to send a response over REPOGATE_MAX_MESSAGE_BYTES. A write builds its
answer before it commits, so one too large to send is RESOURCE_EXHAUSTED
`RESPONSE_TOO_LARGE` and the database is left as it was: every write method that
can return many rows, a single row too large to return, with a request id, and
inside a transaction across calls. Each request here fits the limit; its answer,
which adds ids, times and etags to every row, does not.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, field_mask_pb2
from google.protobuf.message import Message
from grpc import aio
from sqlalchemy import select
from sqlalchemy.engine import make_url

from repogate.v1 import job_pb2, message_pb2, session_pb2, user_pb2
from repogate.v1 import transaction_pb2 as tx_pb2
from repositories.database import Database
from repositories.tables import jobs, messages, request_ids, sessions, users
from server.app import Repogate
from server.settings import Settings
from tests.cache_support import REDIS_URL, require_redis
from tests.e2e.domain import Stubs, new_session, new_user, struct
from tests.e2e.support import StartRepogate, create, fails, get, update
from tests.proxy import Proxy
from tests.rpc import ErrorDetails, details, md

pytestmark = pytest.mark.e2e

LIMIT = 32 * 1024
# Items per batch: requests of 40-60 bytes an item fit LIMIT, answers of 100-200 do not.
ITEMS = 400
# Existing rows are made in batches whose answers fit.
CHUNK = 50


@pytest.fixture(scope="module")
async def small(database_url: str) -> AsyncIterator[Stubs]:
    """A server that sends no message larger than LIMIT, on the session's database."""
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=database_url,
        shutdown_grace=1,
        max_message_bytes=LIMIT,
        db_pool_size=3,
        db_max_overflow=2,
        purge_interval=0,
    )
    async with Repogate(settings) as app, aio.insecure_channel(app.address) as channel:
        yield Stubs.on(channel)


async def refused(call: Awaitable[Any]) -> aio.AioRpcError:
    """The status `call` failed with, its details not yet read: the database is looked
    at first."""
    with pytest.raises(aio.AioRpcError) as err:
        await call
    return err.value


def too_large(error: aio.AioRpcError) -> ErrorDetails:
    found = details(error)
    assert (found.code, found.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RESPONSE_TOO_LARGE")
    assert found.metadata["limit"] == str(LIMIT)
    assert int(found.metadata["size"]) > LIMIT
    assert "nothing was written" in found.message
    return found


async def snapshot(database: Database, tenant: str) -> dict[str, list[Any]]:
    """Every row the tenant has, table by table."""
    found = {}
    async with database.engine.connect() as conn:
        for table in (users, sessions, messages, jobs, request_ids):
            query = select(table).where(table.c.tenant_id == tenant).order_by(table.c.id)
            found[table.name] = [tuple(row) for row in await conn.execute(query)]
    return found


# ------------------------------------------------------------ the rows a batch works on


@dataclass
class Parents:
    user_id: str
    session_id: str


async def parents(s: Stubs, tenant: str) -> Parents:
    user = await new_user(s, tenant, "owner")
    return Parents(user.id, (await new_session(s, tenant, user.id)).id)


def create_user(i: int, _: Parents) -> user_pb2.CreateUserRequest:
    user = user_pb2.User(email=f"u{i}@example.com", username=f"u{i}")
    return user_pb2.CreateUserRequest(user=user)


def create_session(i: int, p: Parents) -> session_pb2.CreateSessionRequest:
    return session_pb2.CreateSessionRequest(session=session_pb2.Session(user_id=p.user_id))


def append_message(i: int, p: Parents) -> message_pb2.AppendMessageRequest:
    message = message_pb2.Message(session_id=p.session_id, message_type="note")
    return message_pb2.AppendMessageRequest(message=message)


def create_job(i: int, _: Parents) -> job_pb2.CreateJobRequest:
    return job_pb2.CreateJobRequest(job=job_pb2.Job(job_type="render"))


@dataclass(frozen=True)
class Kind:
    """One entity service's batch writes, as these tests call them."""

    stub: str  # the Stubs attribute
    plural: str  # as in BatchCreateUsers
    create: str  # "Create", or "Append" for messages
    module: Any
    field: str  # the resource's field in a request: "user"
    create_item: Callable[[int, Parents], Message]
    # A field an update sets, and its value.
    change: tuple[str, Any]

    def rpc(self, s: Stubs, name: str) -> Callable[..., Awaitable[Any]]:
        method: Callable[..., Awaitable[Any]] = getattr(getattr(s, self.stub), name)
        return method

    def request(self, verb: str, items: Sequence[Message]) -> Message:
        cls = getattr(self.module, f"Batch{verb}{self.plural}Request")
        batch: Message = cls(requests=items)
        return batch

    async def existing(self, s: Stubs, tenant: str, p: Parents, count: int) -> list[Any]:
        """`count` rows made in batches whose answers fit."""
        made: list[Any] = []
        for start in range(0, count, CHUNK):
            items = [self.create_item(i, p) for i in range(start, min(count, start + CHUNK))]
            answer = await self.rpc(s, f"Batch{self.create}{self.plural}")(
                self.request(self.create, items), metadata=md(tenant)
            )
            made += getattr(answer, self.stub)
        return made

    def update_item(self, row: Any) -> Message:
        name, value = self.change
        resource = type(row)(id=row.id, **{name: value})
        cls = getattr(self.module, f"Update{type(row).__name__}Request")
        mask = field_mask_pb2.FieldMask(paths=[name])
        update: Message = cls(**{self.field: resource}, update_mask=mask)
        return update

    def delete_item(self, row: Any) -> Message:
        delete: Message = getattr(self.module, f"Delete{type(row).__name__}Request")(id=row.id)
        return delete


KINDS = {
    "Users": Kind("users", "Users", "Create", user_pb2, "user", create_user, ("is_active", False)),
    "Sessions": Kind(
        "sessions", "Sessions", "Create", session_pb2, "session", create_session, ("name", "n")
    ),
    "Messages": Kind(
        "messages", "Messages", "Append", message_pb2, "message", append_message, ("role", "r")
    ),
    "Jobs": Kind("jobs", "Jobs", "Create", job_pb2, "job", create_job, ("priority", 7)),
}

# A call that is too large to answer, and what it writes nothing of.
Call = Callable[[], Awaitable[Any]]


async def batch_create(kind: Kind, s: Stubs, tenant: str) -> Call:
    p = await parents(s, tenant)
    request = kind.request(kind.create, [kind.create_item(i, p) for i in range(ITEMS)])
    return lambda: kind.rpc(s, f"Batch{kind.create}{kind.plural}")(request, metadata=md(tenant))


async def batch_update(kind: Kind, s: Stubs, tenant: str) -> Call:
    rows = await kind.existing(s, tenant, await parents(s, tenant), ITEMS)
    request = kind.request("Update", [kind.update_item(row) for row in rows])
    return lambda: kind.rpc(s, f"BatchUpdate{kind.plural}")(request, metadata=md(tenant))


async def batch_delete(kind: Kind, s: Stubs, tenant: str) -> Call:
    rows = await kind.existing(s, tenant, await parents(s, tenant), ITEMS)
    request = kind.request("Delete", [kind.delete_item(row) for row in rows])
    return lambda: kind.rpc(s, f"BatchDelete{kind.plural}")(request, metadata=md(tenant))


async def transact(s: Stubs, tenant: str) -> Call:
    """Transact of batches each of whose answers fits, but not all of them together."""
    kind = KINDS["Users"]
    calls = []
    for start in range(0, ITEMS, 100):
        items = [create_user(i, Parents("", "")) for i in range(start, start + 100)]
        packed = any_pb2.Any()
        packed.Pack(kind.request("Create", items))
        calls.append(
            tx_pb2.TransactCall(method="repogate.v1.UserService/BatchCreateUsers", request=packed)
        )
    request = tx_pb2.TransactRequest(calls=calls)
    return lambda: s.txs.Transact(request, metadata=md(tenant))


Prepare = Callable[[Stubs, str], Awaitable[Call]]


def _batch(make: Callable[[Kind, Stubs, str], Awaitable[Call]], kind: Kind) -> Prepare:
    return lambda s, tenant: make(kind, s, tenant)


CASES: dict[str, Prepare] = {
    **{f"Batch{k.create}{k.plural}": _batch(batch_create, k) for k in KINDS.values()},
    **{f"BatchUpdate{k.plural}": _batch(batch_update, k) for k in KINDS.values()},
    **{f"BatchDelete{k.plural}": _batch(batch_delete, k) for k in KINDS.values()},
    "Transact": transact,
}


@pytest.mark.parametrize("method", sorted(CASES))
async def test_a_write_whose_answer_is_too_large_writes_nothing(
    small: Stubs, database: Database, tenant: str, method: str
) -> None:
    call = await CASES[method](small, tenant)
    before = await snapshot(database, tenant)

    error = await refused(call())

    assert await snapshot(database, tenant) == before
    too_large(error)


async def test_the_batch_split_as_the_error_advises_goes_through(
    small: Stubs, database: Database, tenant: str
) -> None:
    p = await parents(small, tenant)
    kind = KINDS["Messages"]
    items = [append_message(i, p) for i in range(ITEMS)]
    append = small.messages.BatchAppendMessages
    error = await fails(append(kind.request("Append", items), metadata=md(tenant)))
    fit = int(error.message.rsplit("about ", 1)[1].split()[0])

    answers = [
        await append(kind.request("Append", items[start : start + fit]), metadata=md(tenant))
        for start in range(0, ITEMS, fit)
    ]

    assert 1 < fit < ITEMS
    assert sum(len(answer.messages) for answer in answers) == ITEMS
    numbers = [m.sequence_number for answer in answers for m in answer.messages]
    assert numbers == list(range(1, ITEMS + 1))


async def test_a_request_id_records_nothing_for_an_answer_too_large(
    small: Stubs, database: Database, tenant: str
) -> None:
    p = await parents(small, tenant)
    kind = KINDS["Messages"]
    request = kind.request("Append", [append_message(i, p) for i in range(ITEMS)])
    request.request_id = str(uuid.uuid4())  # type: ignore[attr-defined]
    before = await snapshot(database, tenant)

    first = await refused(small.messages.BatchAppendMessages(request, metadata=md(tenant)))
    retried = await refused(small.messages.BatchAppendMessages(request, metadata=md(tenant)))

    assert await snapshot(database, tenant) == before
    too_large(first)
    too_large(retried)


async def test_inside_a_transaction_the_call_is_undone_and_the_transaction_goes_on(
    small: Stubs, database: Database, tenant: str
) -> None:
    p = await parents(small, tenant)
    kind = KINDS["Messages"]
    before = await snapshot(database, tenant)
    tx = await small.txs.BeginTransaction(tx_pb2.BeginTransactionRequest(), metadata=md(tenant))
    inside = md(tenant, x_transaction_id=tx.id)
    big = kind.request("Append", [append_message(i, p) for i in range(ITEMS)])

    error = await refused(small.messages.BatchAppendMessages(big, metadata=inside))
    kept = await small.messages.AppendMessage(append_message(0, p), metadata=inside)
    await small.txs.Commit(tx_pb2.CommitRequest(transaction_id=tx.id), metadata=md(tenant))

    after = await snapshot(database, tenant)
    assert [row[1] for row in after["messages"]] == [uuid.UUID(kept.id)]
    too_large(error)
    assert kept.sequence_number == 1
    assert {name: rows for name, rows in after.items() if name not in ("messages", "sessions")} == {
        name: rows for name, rows in before.items() if name not in ("messages", "sessions")
    }


# ------------------------------------------------------------ one row too large to return


def filler(size: int) -> dict[str, str]:
    return {"text": "x" * size}


async def test_a_single_row_too_large_to_return_is_not_written(
    small: Stubs, database: Database, tenant: str
) -> None:
    p = await parents(small, tenant)
    message = message_pb2.Message(
        session_id=p.session_id, message_type="note", content=struct(filler(LIMIT - 120))
    )
    request = message_pb2.AppendMessageRequest(message=message)
    assert request.ByteSize() < LIMIT
    before = await snapshot(database, tenant)

    error = await refused(small.messages.AppendMessage(request, metadata=md(tenant)))

    assert await snapshot(database, tenant) == before
    too_large(error)


async def test_an_update_whose_row_grew_past_the_limit_is_not_written(
    small: Stubs, database: Database, tenant: str
) -> None:
    """The update's request is small; the row it answers with is what is too large."""
    p = await parents(small, tenant)

    async def append(size: int) -> message_pb2.Message:
        message = message_pb2.Message(
            session_id=p.session_id, message_type="note", content=struct(filler(size))
        )
        return await small.messages.AppendMessage(
            message_pb2.AppendMessageRequest(message=message), metadata=md(tenant)
        )

    probe = await append(1000)
    # A message whose answer is 40 bytes short of the limit.
    large = await append(1000 + LIMIT - 40 - probe.ByteSize())
    assert LIMIT - 64 < large.ByteSize() <= LIMIT
    before = await snapshot(database, tenant)
    update = message_pb2.UpdateMessageRequest(
        message=message_pb2.Message(id=large.id, role="r" * 64),
        update_mask=field_mask_pb2.FieldMask(paths=["role"]),
    )

    error = await refused(small.messages.UpdateMessage(update, metadata=md(tenant)))

    assert await snapshot(database, tenant) == before
    too_large(error)


# ------------------------------------------------------------ after COMMIT


async def test_a_committed_write_is_not_answered_as_timed_out_while_caches_are_told(
    start_repogate: StartRepogate, tenant: str
) -> None:
    """The statement timeout bounds the database work; once that has committed, a slow
    cache invalidation cannot turn the answer into STATEMENT_TIMEOUT ("undone")."""
    await require_redis()
    redis = make_url(REDIS_URL)
    proxy = Proxy(redis.host or "127.0.0.1", redis.port or 6379)
    await proxy.open()
    try:
        app = await start_repogate(
            redis_url=redis.set(host="127.0.0.1", port=proxy.port).render_as_string(),
            cache_timeout=5,
            db_statement_timeout=0.5,
        )
        ann = await create(app.users, tenant, username="ann")
        ann.display_name = "Ann"
        proxy.reply_delay = 0.8  # every Redis reply, the invalidation's included

        renamed = await update(app.users, tenant, ann, ["display_name"])

        proxy.reply_delay = 0.0
        assert (await get(app.users, tenant, ann.id)) == renamed
        assert renamed.display_name == "Ann"
    finally:
        await proxy.close()
