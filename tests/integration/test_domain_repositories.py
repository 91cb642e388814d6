"""Sessions, messages and jobs repositories on real databases: tenant scope of their
bulk writes, the composite foreign keys, and the purge job around them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from repositories.base import Row
from repositories.database import Database
from repositories.errors import FailedPrecondition, UserHasSessions
from repositories.jobs import JobRepository
from repositories.maintenance import purge_due
from repositories.messages import MessageRepository
from repositories.sessions import SessionRepository
from repositories.tables import messages, sessions
from repositories.users import UserRepository
from tests.integration.support import create_users, other_tenant

pytestmark = pytest.mark.integration

FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


async def new_session(database: Database, tenant: str, user_id: uuid.UUID, **values: Any) -> Row:
    async with database.unit_of_work(tenant) as uow:
        row = await uow.repository(SessionRepository).create(
            {"user_id": user_id, "name": "", "status": "created", "preferences": {}, **values}
        )
        await uow.commit()
    return row


async def append(database: Database, tenant: str, session_id: uuid.UUID) -> Row:
    async with database.unit_of_work(tenant) as uow:
        row = await uow.repository(MessageRepository).create(
            {"session_id": session_id, "message_type": "user", "role": "", "content": {}}
        )
        await uow.commit()
    return row


async def enqueue(database: Database, tenant: str) -> Row:
    async with database.unit_of_work(tenant) as uow:
        row = await uow.repository(JobRepository).create(
            {"job_type": "t", "status": "pending", "priority": 0, "progress": 0, "payload": {}}
        )
        await uow.commit()
    return row


async def session_ids(database: Database, tenant: str) -> set[uuid.UUID]:
    async with database.unit_of_work(tenant, read_only=True) as uow:
        rows, _ = await uow.repository(SessionRepository).page(1000, show_deleted=True)
    return {row["id"] for row in rows}


async def test_session_purge_is_scoped_to_the_tenant(database: Database, tenant: str) -> None:
    other = other_tenant()
    (mine,) = await create_users(database, tenant, "me")
    (theirs,) = await create_users(database, other, "them")
    await new_session(database, tenant, mine["id"])
    kept = await new_session(database, other, theirs["id"])

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(SessionRepository)
        purged = await repo.purge(FUTURE, batch=1)
        await uow.commit()

    assert purged == 1
    assert await session_ids(database, tenant) == set()
    assert await session_ids(database, other) == {kept["id"]}


async def test_job_claims_and_purges_are_scoped_to_the_tenant(
    database: Database, tenant: str
) -> None:
    other = other_tenant()
    theirs = await enqueue(database, other)

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(JobRepository)
        claimed = await repo.claim_next([], "w")
        purged = await repo.purge(FUTURE)
        await uow.commit()

    assert (claimed, purged) == (None, 0)
    async with database.unit_of_work(other, read_only=True) as uow:
        assert (await uow.repository(JobRepository).get(theirs["id"]))["status"] == "pending"


async def test_delete_batches_deletes_every_match_in_bounded_statements(
    database: Database, tenant: str
) -> None:
    for _ in range(7):
        await enqueue(database, tenant)

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(JobRepository)
        deleted = await repo.delete_batches(repo.c.status == "pending", batch=3)
        await uow.commit()

    assert deleted == 7


async def test_a_session_cannot_refer_to_another_tenants_user(
    database: Database, tenant: str
) -> None:
    (theirs,) = await create_users(database, other_tenant(), "them")
    now = datetime.now(UTC)
    row = {
        "id": uuid.uuid4(),
        "version": 1,
        "create_time": now,
        "update_time": now,
        "user_id": theirs["id"],
        "name": "",
        "status": "created",
        "preferences": {},
        "last_access_time": now,
    }

    # Past the repository's own check, straight to the database: the composite key holds.
    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(SessionRepository)
        with pytest.raises(FailedPrecondition):
            await repo._execute(repo.scope.insert([row]))


async def test_a_message_cannot_refer_to_another_tenants_session(
    database: Database, tenant: str
) -> None:
    other = other_tenant()
    (theirs,) = await create_users(database, other, "them")
    session = await new_session(database, other, theirs["id"])
    now = datetime.now(UTC)
    row = {
        "id": uuid.uuid4(),
        "version": 1,
        "create_time": now,
        "update_time": now,
        "session_id": session["id"],
        "sequence_number": 1,
        "message_type": "user",
        "role": "",
        "content": {},
    }

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(MessageRepository)
        with pytest.raises(FailedPrecondition):
            await repo._execute(repo.scope.insert([row]))


async def test_a_sibling_shares_the_unit_of_work(database: Database, tenant: str) -> None:
    (user,) = await create_users(database, tenant, "ann")
    session = await new_session(database, tenant, user["id"])

    async with database.unit_of_work(tenant) as uow:
        messages_repo = uow.repository(MessageRepository)
        sessions_repo = messages_repo.sibling(SessionRepository)
        assert sessions_repo is uow.repository(SessionRepository)
        await messages_repo.create(
            {"session_id": session["id"], "message_type": "user", "role": "", "content": {}}
        )
        # The session's counter moved: recorded in the unit's changes, for caches.
        assert uow.changes.rows == [("sessions", tenant, session["id"], 2)]
        # Not committed: both go.

    async with database.unit_of_work(tenant, read_only=True) as uow:
        again = await uow.repository(SessionRepository).get(session["id"])
        assert await uow.repository(MessageRepository).count() == 0
    assert again["last_sequence_number"] == 0


async def test_releasing_users_refuses_live_sessions_before_writing(
    database: Database, tenant: str
) -> None:
    free, busy = await create_users(database, tenant, "free", "busy")
    deleted = await new_session(database, tenant, free["id"])
    async with database.unit_of_work(tenant) as uow:
        await uow.repository(SessionRepository).delete(deleted["id"])
        await uow.commit()
    await new_session(database, tenant, busy["id"])

    async with database.unit_of_work(tenant) as uow:
        with pytest.raises(UserHasSessions) as refused:
            await uow.repository(SessionRepository).release_users([free["id"], busy["id"]])

    assert refused.value.metadata["id"] == str(busy["id"])
    assert len(await session_ids(database, tenant)) == 2


async def test_the_purge_job_leaves_users_that_sessions_still_need(
    database: Database, tenant: str
) -> None:
    hour = timedelta(hours=1)
    keeper, loner = await create_users(database, tenant, "keeper", "loner")
    session = await new_session(database, tenant, keeper["id"])
    message = await append(database, tenant, session["id"])
    async with database.unit_of_work(tenant) as uow:
        users_repo = uow.repository(UserRepository)
        for user in (keeper, loner):
            await users_repo.delete(user["id"], retention=hour)
        await uow.commit()
    later = datetime.now(UTC) + 2 * hour

    first = await purge_due(database, now=later)

    assert first["users"] >= 1  # other tests' rows may be due too: the purge spans tenants
    async with database.unit_of_work(tenant, read_only=True) as uow:
        rows, _ = await uow.repository(UserRepository).page(10, show_deleted=True)
    assert [row["id"] for row in rows] == [keeper["id"]]

    # Once its session is purged too (with its messages), the user goes.
    async with database.unit_of_work(tenant) as uow:
        await uow.repository(SessionRepository).delete(session["id"], retention=hour)
        await uow.commit()
    await purge_due(database, now=later)

    async with database.engine.connect() as conn:
        left = [
            (await conn.execute(table.select().where(table.c.tenant_id == tenant))).all()
            for table in (sessions, messages)
        ]
    assert left == [[], []]
    async with database.unit_of_work(tenant, read_only=True) as uow:
        rows, _ = await uow.repository(UserRepository).page(10, show_deleted=True)
    assert rows == []
    assert message["session_id"] == session["id"]
