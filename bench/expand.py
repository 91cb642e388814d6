"""`python -m bench.expand`: what `expand` costs (docs/schema.md, "Related resources").

1. The children's statement on PostgreSQL, LATERAL (what Repogate runs there) against
   row_number() (what it runs on SQLite), for one session of 100,000 messages and for 50
   sessions of 200, the first 101 of each: server and driver time per statement.
2. Through a Repogate in this process (client and server share the CPU, so read the
   figures against each other): GetSession with `expand: messages` (10 messages) against
   what a client does without it, a cached GetSession and then ListMessages filtered on
   the session.

Rounds alternate which side goes first; the medians are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from grpc import aio
from sqlalchemy import text
from sqlalchemy.engine import make_url

from repogate.v1 import (
    message_pb2,
    message_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)
from repositories.database import Database, create_engine
from repositories.messages import MessageRepository
from repositories.migrate import upgrade
from repositories.related import PARENTS_PARAM, first_of_each
from server.app import Repogate
from server.settings import Settings

TENANT = "bench"
USER = uuid.UUID(int=1)
SESSIONS = [uuid.UUID(int=(1 << 64) + n) for n in range(51)]  # the first: 100,000 messages
SEED = [
    """INSERT INTO users (tenant_id, id, version, create_time, update_time, email, username,
         display_name, is_active)
       VALUES (:t, :user, 1, now(), now(), 'a@bench.example', 'a', '', true)""",
    """INSERT INTO sessions (tenant_id, id, version, create_time, update_time, user_id, name,
         status, preferences, total_messages, total_tool_calls, total_cost_usd, input_tokens,
         output_tokens, last_sequence_number, last_access_time)
       SELECT :t, s, 1, now(), now(), :user, '', 'created', '{}', 0, 0, 0, 0, 0, 0, now()
       FROM unnest(CAST(:sessions AS uuid[])) s""",
    """INSERT INTO messages (tenant_id, id, version, create_time, update_time, session_id,
         sequence_number, message_type, role, content)
       SELECT :t, gen_random_uuid(), 1, now(), now(), CAST(:big AS uuid), g, 'user', 'user',
         '{"text": "hello"}'
       FROM generate_series(1, 100000) g""",
    """INSERT INTO messages (tenant_id, id, version, create_time, update_time, session_id,
         sequence_number, message_type, role, content)
       SELECT :t, gen_random_uuid(), 1, now(), now(), s, g, 'user', 'user', '{"text": "hi"}'
       FROM unnest(CAST(:small AS uuid[])) s, generate_series(1, 200) g""",
]


async def _per_call(work: Callable[[], Awaitable[object]], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await work()
    return (time.perf_counter() - started) / n * 1e6


async def _paired(
    label: str,
    a: tuple[str, Callable[[], Awaitable[object]]],
    b: tuple[str, Callable[[], Awaitable[object]]],
    calls: int,
    rounds: int,
) -> None:
    for _, work in (a, b):
        await _per_call(work, max(1, calls // 10))  # warm up
    times: dict[str, list[float]] = {a[0]: [], b[0]: []}
    for r in range(rounds):
        for name, work in (a, b) if r % 2 == 0 else (b, a):
            times[name].append(await _per_call(work, calls))
    print(
        f"{label}: "
        + ", ".join(f"{name} {statistics.median(each):.0f} µs" for name, each in times.items())
    )


async def statements(db: Database, calls: int, rounds: int) -> None:
    order = MessageRepository.entity.order
    for label, parents in (("1 session of 100,000", SESSIONS[:1]), ("50 of 200", SESSIONS[1:])):

        def run(
            lateral: bool, parents: list[uuid.UUID] = parents
        ) -> Callable[[], Awaitable[object]]:
            async def once() -> object:
                async with db.unit_of_work(TENANT, read_only=True) as uow:
                    repo = uow.repository(MessageRepository)
                    stmt = first_of_each(repo.scope, "session_id", order, 101, lateral=lateral)
                    # The statement as related.first_children runs it, in either dialect's shape.
                    result = await repo._execute(stmt, {PARENTS_PARAM: parents})
                    return result.all()

            return once

        await _paired(label, ("LATERAL", run(True)), ("row_number()", run(False)), calls, rounds)


async def calls_through_a_server(url: str, calls: int, rounds: int) -> None:
    settings = Settings(listen="127.0.0.1:0", database_url=url, purge_interval=0)
    async with Repogate(settings) as app, aio.insecure_channel(app.address) as channel:
        md = (("x-tenant-id", "bench-calls"),)
        users = user_pb2_grpc.UserServiceStub(channel)
        sessions = session_pb2_grpc.SessionServiceStub(channel)
        messages = message_pb2_grpc.MessageServiceStub(channel)
        user = await users.CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(email="b@x.example", username="b")),
            metadata=md,
        )
        session = await sessions.CreateSession(
            session_pb2.CreateSessionRequest(session=session_pb2.Session(user_id=user.id)),
            metadata=md,
        )
        appends = [
            message_pb2.AppendMessageRequest(
                message=message_pb2.Message(session_id=session.id, message_type="user")
            )
            for _ in range(10)
        ]
        await messages.BatchAppendMessages(
            message_pb2.BatchAppendMessagesRequest(requests=appends), metadata=md
        )
        expanded = session_pb2.GetSessionRequest(id=session.id, expand=["messages"])
        plain = session_pb2.GetSessionRequest(id=session.id)
        listed = message_pb2.ListMessagesRequest(filter=f'session_id = "{session.id}"')

        async def one() -> object:
            return await sessions.GetSession(expanded, metadata=md)

        async def two() -> object:
            await sessions.GetSession(plain, metadata=md)
            return await messages.ListMessages(listed, metadata=md)

        await _paired(
            "a session with 10 messages",
            ("GetSession expand", one),
            ("GetSession + ListMessages", two),
            calls,
            rounds,
        )


async def main(pg: str, calls: int, rounds: int) -> None:
    admin = await asyncpg.connect(make_url(pg).set(drivername="postgresql").render_as_string(False))
    name = f"repogate_expand_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(pg).set(database=name).render_as_string(hide_password=False)
    db = Database(create_engine(url))
    try:
        await upgrade(db.engine)
        async with db.engine.begin() as conn:
            params = {
                "t": TENANT,
                "user": USER,
                "sessions": SESSIONS,
                "big": SESSIONS[0],
                "small": SESSIONS[1:],
            }
            for sql in SEED:
                await conn.execute(text(sql), params)
            await conn.execute(text("ANALYZE"))
        await statements(db, calls // 10, rounds)
        await calls_through_a_server(url, calls, rounds)
    finally:
        await db.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pg", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--calls", type=int, default=200, help="per side per round")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    asyncio.run(main(args.pg, args.calls, args.rounds))
