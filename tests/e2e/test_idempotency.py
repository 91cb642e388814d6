"""AIP-155 request ids through the real server: a retry replays the first response and
writes nothing, a reused id on another request is refused, ids are per tenant and expire."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from grpc import aio
from sqlalchemy import func, select, text, update

from repogate.v1 import user_pb2
from repositories.database import Database
from repositories.maintenance import purge_due
from repositories.tables import request_ids, users
from tests.e2e.support import Stub, all_users, create, fails, get, update_request
from tests.rpc import details, md

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _new_id() -> str:
    return str(uuid.uuid4())


def _user(tag: str, **fields: Any) -> user_pb2.User:
    return user_pb2.User(email=f"{tag}@example.com", username=tag, **fields)


def _create_request(request_id: str, user: user_pb2.User) -> user_pb2.CreateUserRequest:
    return user_pb2.CreateUserRequest(user=user, request_id=request_id)


async def _create_with_id(
    stub: Stub, tenant: str, request_id: str, user: user_pb2.User
) -> user_pb2.User:
    return await stub.CreateUser(_create_request(request_id, user), metadata=md(tenant))


def _batch_create_request(
    request_id: str, *members: user_pb2.User
) -> user_pb2.BatchCreateUsersRequest:
    return user_pb2.BatchCreateUsersRequest(
        requests=[user_pb2.CreateUserRequest(user=member) for member in members],
        request_id=request_id,
    )


async def _user_rows(db: Database, tenant: str) -> int:
    """Every user row of the tenant, soft-deleted or not, straight from the table."""
    stmt = select(func.count()).select_from(users).where(users.c.tenant_id == tenant)
    async with db.engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def _recorded(db: Database, tenant: str) -> list[Any]:
    """The tenant's request id records, straight from the table."""
    stmt = select(request_ids).where(request_ids.c.tenant_id == tenant)
    async with db.engine.connect() as conn:
        return list((await conn.execute(stmt)).mappings())


async def _expire(db: Database, tenant: str, request_id: str) -> None:
    """Makes one of the tenant's request ids expired (but leaves it for the purge)."""
    stmt = (
        update(request_ids)
        .where(request_ids.c.tenant_id == tenant, request_ids.c.id == uuid.UUID(request_id))
        .values(expire_time=datetime(2000, 1, 1, tzinfo=UTC))
    )
    async with db.engine.begin() as conn:
        assert (await conn.execute(stmt)).rowcount == 1


def _assert_reused(error) -> None:
    assert error.code == INVALID, error
    assert error.reason == "REQUEST_ID_REUSED", error
    assert list(error.violations) == ["request_id"], error.violations


# Retries replay


async def test_a_retried_create_returns_the_first_response_and_writes_once(
    users: Stub, database: Database, tenant: str
) -> None:
    request_id = _new_id()

    first = await _create_with_id(users, tenant, request_id, _user("ann", display_name="Ann"))
    retried = [
        await _create_with_id(users, tenant, request_id, _user("ann", display_name="Ann"))
        for _ in range(2)
    ]

    assert all(again == first for again in retried)  # same id, etag, create_time: every field
    assert (first.email, first.display_name, first.etag) == ("ann@example.com", "Ann", "1")
    assert await all_users(users, tenant) == [first]
    assert await _user_rows(database, tenant) == 1
    (record,) = await _recorded(database, tenant)
    assert record["id"] == uuid.UUID(request_id)
    assert record["method"] == "repogate.v1.CreateUserRequest"


async def test_a_request_id_names_the_same_request_in_either_case(
    users: Stub, database: Database, tenant: str
) -> None:
    request_id = _new_id()
    first = await _create_with_id(users, tenant, request_id, _user("bo"))

    again = await _create_with_id(users, tenant, request_id.upper(), _user("bo"))

    assert again == first
    assert await _user_rows(database, tenant) == 1


@pytest.mark.parametrize(
    "spelling",
    [lambda text: text.replace("-", ""), lambda text: "{" + text + "}"],
    ids=["no-hyphens", "braces"],
)
async def test_a_request_id_in_another_spelling_is_refused(
    users: Stub, database: Database, tenant: str, spelling
) -> None:
    request_id = _new_id()
    first = await _create_with_id(users, tenant, request_id, _user("bo"))

    # 8-4-4-4-12 only, as every id (tests/e2e/test_ids.py).
    error = await fails(_create_with_id(users, tenant, spelling(request_id), _user("bo")))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.violations) == ["request_id"]
    assert await all_users(users, tenant) == [first]
    assert await _user_rows(database, tenant) == 1


async def test_a_retry_replays_the_first_response_even_after_the_user_changed(
    users: Stub, database: Database, tenant: str
) -> None:
    request_id = _new_id()
    first = await _create_with_id(users, tenant, request_id, _user("cy"))
    changed = await users.UpdateUser(
        update_request(user_pb2.User(id=first.id, display_name="Cy")), metadata=md(tenant)
    )

    again = await _create_with_id(users, tenant, request_id, _user("cy"))

    # AIP-155: the retry gets the first response, not the current state, and writes nothing.
    assert again == first
    assert again.etag != changed.etag
    assert await get(users, tenant, first.id) == changed
    assert await _user_rows(database, tenant) == 1


async def test_a_retry_after_the_user_was_purged_does_not_create_it_again(
    users: Stub, database: Database, tenant: str
) -> None:
    request_id = _new_id()
    first = await _create_with_id(users, tenant, request_id, _user("dee"))
    await users.DeleteUser(user_pb2.DeleteUserRequest(id=first.id, force=True), metadata=md(tenant))

    again = await _create_with_id(users, tenant, request_id, _user("dee"))

    assert again == first
    assert (await fails(get(users, tenant, first.id))).code == grpc.StatusCode.NOT_FOUND
    assert await _user_rows(database, tenant) == 0


async def test_concurrent_retries_create_one_user_and_all_answer_alike(
    users: Stub, database: Database, tenant: str, backend: str
) -> None:
    request_id = _new_id()
    calls = 8

    results = await asyncio.gather(
        *(_create_with_id(users, tenant, request_id, _user("eve")) for _ in range(calls)),
        return_exceptions=True,
    )

    succeeded = [r for r in results if isinstance(r, user_pb2.User)]
    failed = [details(r) for r in results if isinstance(r, aio.AioRpcError)]
    assert len(succeeded) + len(failed) == calls, results  # nothing else was raised
    # SQLite may answer ABORTED once its busy timeout runs out; PostgreSQL makes the
    # losers wait for the winner and then replays its response.
    for error in failed:
        assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "CONCURRENCY_CONFLICT")
    if backend == "postgresql":
        assert failed == []
    assert succeeded, failed
    assert all(user == succeeded[0] for user in succeeded), succeeded
    assert await all_users(users, tenant) == [succeeded[0]]
    assert await _user_rows(database, tenant) == 1
    assert len(await _recorded(database, tenant)) == 1
    # A retry afterwards answers the same as every racer did.
    assert await _create_with_id(users, tenant, request_id, _user("eve")) == succeeded[0]


async def test_retries_that_collide_on_the_claim_replay_the_winner(
    users: Stub, database: Database, tenant: str, backend: str
) -> None:
    """Forces the race the gather above may not hit: every call has looked the id up
    and found nothing before any of them commits."""
    if backend != "postgresql":
        pytest.skip("SQLite serialises write transactions (BEGIN IMMEDIATE): claims never race")
    request_id = _new_id()
    # Fewer than the tenant's share of the pool (REPOGATE_TENANT_MAX_CONCURRENCY, half the
    # default 10): a call beyond it would wait for a connection, not on the lock.
    calls = 4
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with database.engine.connect() as blocker:
        # The first claimant's INSERT INTO users waits on this lock, holding its claim;
        # the others' claims then wait on the first one's transaction.
        await blocker.execute(text("LOCK TABLE users IN SHARE MODE"))
        racing = asyncio.gather(
            *(_create_with_id(users, tenant, request_id, _user("fay")) for _ in range(calls)),
            return_exceptions=True,
        )
        try:
            async with database.engine.connect() as probe:
                probe = await probe.execution_options(isolation_level="AUTOCOMMIT")
                for _ in range(1000):
                    if (await probe.execute(waiting)).scalar_one() >= calls:
                        break
                    await asyncio.sleep(0.01)
                else:
                    pytest.fail(f"the {calls} calls never all waited on a lock")
        finally:
            await blocker.rollback()
        results = await racing

    errors = [details(r) for r in results if isinstance(r, aio.AioRpcError)]
    assert errors == []
    assert all(user == results[0] for user in results), results
    assert await all_users(users, tenant) == [results[0]]
    assert await _user_rows(database, tenant) == 1
    assert len(await _recorded(database, tenant)) == 1


# Reuse on another request


@pytest.mark.parametrize(
    "different",
    [_user("gus-other"), _user("gus", display_name="Gus")],
    ids=["other-user", "one-more-field"],
)
async def test_the_same_request_id_on_a_different_create_is_refused(
    users: Stub, database: Database, tenant: str, different: user_pb2.User
) -> None:
    request_id = _new_id()
    first = await _create_with_id(users, tenant, request_id, _user("gus"))

    error = await fails(_create_with_id(users, tenant, request_id, different))

    _assert_reused(error)
    assert await all_users(users, tenant) == [first]
    assert await _user_rows(database, tenant) == 1
    # The record still answers the original request.
    assert await _create_with_id(users, tenant, request_id, _user("gus")) == first


async def test_a_create_request_id_cannot_be_reused_for_a_batch_create(
    users: Stub, database: Database, tenant: str
) -> None:
    request_id = _new_id()
    first = await _create_with_id(users, tenant, request_id, _user("hal"))

    error = await fails(
        users.BatchCreateUsers(
            _batch_create_request(request_id, _user("hal"), _user("hal2")), metadata=md(tenant)
        )
    )

    _assert_reused(error)
    assert await all_users(users, tenant) == [first]
    assert await _user_rows(database, tenant) == 1


async def test_a_batch_create_request_id_cannot_be_reused_for_a_create(
    users: Stub, database: Database, tenant: str
) -> None:
    request_id = _new_id()
    batch = await users.BatchCreateUsers(
        _batch_create_request(request_id, _user("ida")), metadata=md(tenant)
    )

    error = await fails(_create_with_id(users, tenant, request_id, _user("ida")))

    _assert_reused(error)
    assert await all_users(users, tenant) == list(batch.users)
    assert await _user_rows(database, tenant) == 1


async def test_a_batch_write_request_id_cannot_be_reused_by_another_batch_method(
    users: Stub, tenant: str
) -> None:
    request_id = _new_id()
    created = await create(users, tenant, username="jo")
    await users.BatchUpdateUsers(
        user_pb2.BatchUpdateUsersRequest(
            requests=[update_request(user_pb2.User(id=created.id, display_name="Jo"))],
            request_id=request_id,
        ),
        metadata=md(tenant),
    )

    error = await fails(
        users.BatchDeleteUsers(
            user_pb2.BatchDeleteUsersRequest(
                requests=[user_pb2.DeleteUserRequest(id=created.id)], request_id=request_id
            ),
            metadata=md(tenant),
        )
    )

    _assert_reused(error)
    assert not (await get(users, tenant, created.id)).HasField("delete_time")


async def test_a_request_id_is_bound_to_its_method_even_for_identical_bytes(
    users: Stub, database: Database, tenant: str
) -> None:
    existing = await create(users, tenant, username="gil")
    request_id = _new_id()
    # Create ignores the output-only id; update reads it. Both requests encode alike.
    member = user_pb2.User(id=existing.id, email="gia@example.com", username="gia")
    batch_create = _batch_create_request(request_id, member)
    batch_update = user_pb2.BatchUpdateUsersRequest(
        requests=[user_pb2.UpdateUserRequest(user=member)], request_id=request_id
    )
    assert batch_create.SerializeToString(deterministic=True) == batch_update.SerializeToString(
        deterministic=True
    )
    (created,) = (await users.BatchCreateUsers(batch_create, metadata=md(tenant))).users

    error = await fails(users.BatchUpdateUsers(batch_update, metadata=md(tenant)))

    _assert_reused(error)
    assert await get(users, tenant, existing.id) == existing
    assert sorted(u.id for u in await all_users(users, tenant)) == sorted([existing.id, created.id])


# Malformed ids


@pytest.mark.parametrize(
    "request_id",
    ["not-a-uuid", "12345", "g" * 32, str(uuid.UUID(int=7))[:-1], str(uuid.UUID(int=7)) + "0"],
)
async def test_a_malformed_request_id_is_invalid_and_writes_nothing(
    users: Stub, database: Database, tenant: str, request_id: str
) -> None:
    create_error = await fails(_create_with_id(users, tenant, request_id, _user("kim")))
    batch_error = await fails(
        users.BatchCreateUsers(_batch_create_request(request_id, _user("kim")), metadata=md(tenant))
    )

    for error in (create_error, batch_error):
        assert error.code == INVALID, error
        assert error.reason == "INVALID_ARGUMENT"
        assert list(error.violations) == ["request_id"], error.violations
    assert await _user_rows(database, tenant) == 0
    assert await _recorded(database, tenant) == []


async def test_the_request_ids_of_batch_items_are_ignored(
    users: Stub, database: Database, tenant: str
) -> None:
    item_id = _new_id()
    batch = await users.BatchCreateUsers(
        user_pb2.BatchCreateUsersRequest(
            requests=[
                _create_request(item_id, _user("lee")),
                _create_request("not-a-uuid", _user("lou")),
            ]
        ),
        metadata=md(tenant),
    )

    # The item's id was not claimed: a create with it runs as a new request.
    alone = await _create_with_id(users, tenant, item_id, _user("lee2"))

    assert [user.username for user in batch.users] == ["lee", "lou"]
    assert alone.id not in {user.id for user in batch.users}
    assert await _user_rows(database, tenant) == 3
    assert [record["id"] for record in await _recorded(database, tenant)] == [uuid.UUID(item_id)]


async def test_a_batch_retry_that_only_renews_item_request_ids_replays(
    users: Stub, database: Database, tenant: str
) -> None:
    request_id = _new_id()

    def attempt() -> user_pb2.BatchCreateUsersRequest:
        # A client that stamps every item afresh on each attempt.
        return user_pb2.BatchCreateUsersRequest(
            requests=[_create_request(_new_id(), _user("hana")), _create_request("", _user("hao"))],
            request_id=request_id,
        )

    first = await users.BatchCreateUsers(attempt(), metadata=md(tenant))
    again = await users.BatchCreateUsers(attempt(), metadata=md(tenant))

    assert again == first
    assert await _user_rows(database, tenant) == 2


# Failed calls record nothing


async def test_a_create_that_failed_records_nothing_so_its_retry_runs_afresh(
    users: Stub, database: Database, tenant: str
) -> None:
    blocker = await create(users, tenant, email="max@example.com", username="blocker")
    request_id = _new_id()

    error = await fails(_create_with_id(users, tenant, request_id, _user("max")))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.metadata["field"] == "email"
    assert await _recorded(database, tenant) == []

    await users.DeleteUser(
        user_pb2.DeleteUserRequest(id=blocker.id, force=True), metadata=md(tenant)
    )
    created = await _create_with_id(users, tenant, request_id, _user("max"))

    assert created.id != blocker.id
    assert created.email == "max@example.com"
    assert await all_users(users, tenant) == [created]
    assert await _create_with_id(users, tenant, request_id, _user("max")) == created
    assert await _user_rows(database, tenant) == 1


async def test_an_invalid_create_records_nothing_so_its_id_stays_free(
    users: Stub, database: Database, tenant: str
) -> None:
    request_id = _new_id()

    error = await fails(
        _create_with_id(users, tenant, request_id, user_pb2.User(email="x", username="ned"))
    )
    assert list(error.violations) == ["user.email"]

    # A corrected request with the same id is not "a different request": nothing was kept.
    created = await _create_with_id(users, tenant, request_id, _user("ned"))
    assert await all_users(users, tenant) == [created]


async def test_a_batch_create_that_failed_records_nothing(
    users: Stub, database: Database, tenant: str
) -> None:
    blocker = await create(users, tenant, username="nel")
    request_id = _new_id()
    request = _batch_create_request(request_id, _user("ola"), _user("nel"))

    error = await fails(users.BatchCreateUsers(request, metadata=md(tenant)))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert await _recorded(database, tenant) == []
    assert await all_users(users, tenant) == [blocker]

    await users.DeleteUser(user_pb2.DeleteUserRequest(id=blocker.id), metadata=md(tenant))
    batch = await users.BatchCreateUsers(request, metadata=md(tenant))

    assert [user.username for user in batch.users] == ["ola", "nel"]
    assert await users.BatchCreateUsers(request, metadata=md(tenant)) == batch


# Tenants


async def test_request_ids_are_per_tenant(users: Stub, database: Database, tenant: str) -> None:
    other = tenant + "-other"
    request_id = _new_id()

    mine = await _create_with_id(users, tenant, request_id, _user("pam"))
    theirs = await _create_with_id(users, other, request_id, _user("pam"))

    assert mine.id != theirs.id
    assert await all_users(users, tenant) == [mine]
    assert await all_users(users, other) == [theirs]
    assert await _create_with_id(users, tenant, request_id, _user("pam")) == mine
    assert await _create_with_id(users, other, request_id, _user("pam")) == theirs
    # A different request under the id is refused only where the id was used for it.
    third = tenant + "-third"
    assert (await _create_with_id(users, third, request_id, _user("quin"))).username == "quin"
    _assert_reused(await fails(_create_with_id(users, other, request_id, _user("quin"))))


# Batch retries


async def test_a_retried_batch_create_replays_the_first_response(
    users: Stub, database: Database, tenant: str
) -> None:
    request_id = _new_id()
    request = _batch_create_request(request_id, _user("rex"), _user("roy"), _user("ria"))

    first = await users.BatchCreateUsers(request, metadata=md(tenant))
    again = await users.BatchCreateUsers(request, metadata=md(tenant))

    assert again == first
    assert [user.username for user in first.users] == ["rex", "roy", "ria"]
    assert await _user_rows(database, tenant) == 3
    reordered = _batch_create_request(request_id, _user("roy"), _user("rex"), _user("ria"))
    _assert_reused(await fails(users.BatchCreateUsers(reordered, metadata=md(tenant))))
    assert await _user_rows(database, tenant) == 3


async def test_a_retried_batch_update_replays_instead_of_failing_on_its_etag(
    users: Stub, tenant: str
) -> None:
    created = await create(users, tenant, username="sam")
    request = user_pb2.BatchUpdateUsersRequest(
        requests=[
            update_request(
                user_pb2.User(id=created.id, etag=created.etag, display_name="Sam"),
                ["display_name"],
            )
        ],
        request_id=_new_id(),
    )

    first = await users.BatchUpdateUsers(request, metadata=md(tenant))
    # Run afresh, the retry's etag would now be stale (ABORTED): it must replay instead.
    again = await users.BatchUpdateUsers(request, metadata=md(tenant))

    assert again == first
    assert first.users[0].etag == "2"
    assert await get(users, tenant, created.id) == first.users[0]


async def test_a_retried_batch_delete_replays_instead_of_failing_on_the_deleted_user(
    users: Stub, tenant: str
) -> None:
    created = await create(users, tenant, username="tia")
    request = user_pb2.BatchDeleteUsersRequest(
        requests=[user_pb2.DeleteUserRequest(id=created.id)], request_id=_new_id()
    )

    first = await users.BatchDeleteUsers(request, metadata=md(tenant))
    again = await users.BatchDeleteUsers(request, metadata=md(tenant))

    assert again == first
    assert first.users[0].HasField("delete_time")
    assert await get(users, tenant, created.id) == first.users[0]


# Expiry


async def test_an_expired_request_id_is_free_even_before_the_purge(
    users: Stub, database: Database, tenant: str
) -> None:
    request_id = _new_id()
    first = await _create_with_id(users, tenant, request_id, _user("uma"))
    await users.DeleteUser(user_pb2.DeleteUserRequest(id=first.id, force=True), metadata=md(tenant))
    await _expire(database, tenant, request_id)

    again = await _create_with_id(users, tenant, request_id, _user("uma"))

    assert again.id != first.id  # written anew, not replayed
    assert await all_users(users, tenant) == [again]
    # The expired record was replaced by the new call's.
    (record,) = await _recorded(database, tenant)
    assert record["expire_time"] > record["create_time"]
    assert await _create_with_id(users, tenant, request_id, _user("uma")) == again


async def test_the_purge_removes_request_ids_after_their_ttl_and_frees_them(
    users: Stub, database: Database, tenant: str
) -> None:
    request_id = _new_id()
    first = await _create_with_id(users, tenant, request_id, _user("val"))
    (record,) = await _recorded(database, tenant)
    # The shared server runs with the default TTL of 24 hours.
    assert record["expire_time"] - record["create_time"] == timedelta(hours=24)

    await purge_due(database, now=record["expire_time"] - timedelta(seconds=1))
    assert len(await _recorded(database, tenant)) == 1
    _assert_reused(await fails(_create_with_id(users, tenant, request_id, _user("viv"))))

    purged = await purge_due(database, now=record["expire_time"])

    assert purged["request_ids"] >= 1
    assert await _recorded(database, tenant) == []
    assert await all_users(users, tenant) == [first]  # the purge leaves live users alone
    reused = await _create_with_id(users, tenant, request_id, _user("viv"))
    assert reused.username == "viv"
    assert {user.id for user in await all_users(users, tenant)} == {first.id, reused.id}


async def test_the_request_id_ttl_setting_sets_the_expiry(
    start_repogate, database: Database, database_url: str, tenant: str
) -> None:
    dedicated = await start_repogate(database_url=database_url, request_id_ttl=60, purge_interval=0)
    request_id = _new_id()
    first = await _create_with_id(dedicated.users, tenant, request_id, _user("wes"))
    (record,) = await _recorded(database, tenant)
    assert record["expire_time"] - record["create_time"] == timedelta(seconds=60)

    created_at: datetime = record["create_time"]
    await purge_due(database, now=created_at + timedelta(seconds=59))
    assert len(await _recorded(database, tenant)) == 1
    await purge_due(database, now=created_at + timedelta(seconds=60))
    assert await _recorded(database, tenant) == []

    reused = await _create_with_id(dedicated.users, tenant, request_id, _user("wil"))
    assert reused.id != first.id
    assert await _user_rows(database, tenant) == 2
