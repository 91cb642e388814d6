"""Soft delete (AIP-164), retention and purge, and the audit columns, through a real
server: DeleteUser, UndeleteUser, show_deleted on ListUsers and CountUsers, force,
purge_time, `purge_due`, and created_by/updated_by from `x-actor-id`."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import select

from repogate.v1 import query_pb2, user_pb2
from repositories.database import Database
from repositories.maintenance import purge_due
from repositories.tables import request_ids
from tests.e2e.support import Dedicated, StartRepogate, Stub, create, fails, get, update
from tests.rpc import md

pytestmark = pytest.mark.e2e

HOUR = timedelta(hours=1)
EXACT = query_pb2.CountMode.COUNT_MODE_EXACT


def _time(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


async def delete(
    stub: Stub,
    tenant: str,
    id_: str,
    *,
    etag: str = "",
    force: bool = False,
    actor: str | None = None,
) -> user_pb2.User:
    extra = {} if actor is None else {"x_actor_id": actor}
    return await stub.DeleteUser(
        user_pb2.DeleteUserRequest(id=id_, etag=etag, force=force), metadata=md(tenant, **extra)
    )


async def undelete(
    stub: Stub, tenant: str, id_: str, *, etag: str = "", actor: str | None = None
) -> user_pb2.User:
    extra = {} if actor is None else {"x_actor_id": actor}
    return await stub.UndeleteUser(
        user_pb2.UndeleteUserRequest(id=id_, etag=etag), metadata=md(tenant, **extra)
    )


async def listed(stub: Stub, tenant: str, *, show_deleted: bool = False) -> list[user_pb2.User]:
    """Every user ListUsers returns (one page: tests here have few users)."""
    page = await stub.ListUsers(
        user_pb2.ListUsersRequest(page_size=1000, show_deleted=show_deleted), metadata=md(tenant)
    )
    assert not page.next_page_token
    return list(page.users)


async def counted(stub: Stub, tenant: str, *, show_deleted: bool = False, filter_: str = "") -> int:
    response = await stub.CountUsers(
        user_pb2.CountUsersRequest(filter=filter_, show_deleted=show_deleted), metadata=md(tenant)
    )
    assert response.total_size_exact
    return response.total_size


async def everything(stub: Stub, tenant: str) -> list[user_pb2.User]:
    """The tenant's users, live and soft-deleted: the state a failed call must not change."""
    return await listed(stub, tenant, show_deleted=True)


# Delete and what reads see of it


async def test_delete_sets_delete_time_and_returns_the_user_with_a_new_etag(
    users, tenant: str
) -> None:
    created = await create(users, tenant, username="ann", display_name="Ann")

    deleted = await delete(users, tenant, created.id)

    assert deleted.HasField("delete_time")
    assert _time(deleted.delete_time) >= _time(created.create_time)
    assert deleted.update_time == deleted.delete_time
    assert deleted.etag != created.etag
    # The server keeps deleted users (no retention), so no purge is scheduled.
    assert not deleted.HasField("purge_time")
    unchanged = ("id", "email", "username", "display_name", "is_active", "create_time")
    for field in unchanged:
        assert getattr(deleted, field) == getattr(created, field), field
    assert not created.HasField("delete_time")


async def test_get_still_returns_a_deleted_user(users, tenant: str) -> None:
    created = await create(users, tenant, username="bea")
    deleted = await delete(users, tenant, created.id)

    assert await get(users, tenant, created.id) == deleted


async def test_list_hides_deleted_users_unless_show_deleted(users, tenant: str) -> None:
    first = await create(users, tenant, username="first")
    second = await create(users, tenant, username="second")
    third = await create(users, tenant, username="third")
    deleted = await delete(users, tenant, second.id)

    assert await listed(users, tenant) == [first, third]
    assert await listed(users, tenant, show_deleted=True) == [first, deleted, third]


async def test_list_total_size_follows_show_deleted(users, tenant: str) -> None:
    await create(users, tenant, username="kept")
    gone = await create(users, tenant, username="gone")
    await delete(users, tenant, gone.id)

    sizes = {}
    for show_deleted in (False, True):
        page = await users.ListUsers(
            user_pb2.ListUsersRequest(count_mode=EXACT, show_deleted=show_deleted),
            metadata=md(tenant),
        )
        sizes[show_deleted] = (page.total_size, len(page.users))

    assert sizes == {False: (1, 1), True: (2, 2)}


async def test_count_excludes_deleted_users_unless_show_deleted(users, tenant: str) -> None:
    await create(users, tenant, username="cal")
    dee = await create(users, tenant, username="dee")
    await create(users, tenant, username="eli")
    assert await counted(users, tenant) == 3

    await delete(users, tenant, dee.id)

    assert await counted(users, tenant) == 2
    assert await counted(users, tenant, show_deleted=True) == 3
    assert await counted(users, tenant, filter_='username = "dee"') == 0
    assert await counted(users, tenant, filter_='username = "dee"', show_deleted=True) == 1


# Writes refuse a deleted user


@pytest.mark.parametrize("with_etag", [False, True], ids=["no-etag", "current-etag"])
async def test_update_of_a_deleted_user_fails_and_changes_nothing(
    users, tenant: str, with_etag: bool
) -> None:
    created = await create(users, tenant, username="fay", display_name="Fay")
    deleted = await delete(users, tenant, created.id)
    etag = deleted.etag if with_etag else ""

    error = await fails(
        update(users, tenant, user_pb2.User(id=created.id, etag=etag, display_name="Ghost"))
    )

    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "RESOURCE_DELETED"
    assert error.metadata["id"] == created.id
    assert error.metadata["resource_type"] == "user"
    assert await everything(users, tenant) == [deleted]


@pytest.mark.parametrize("etag", ["none", "current", "stale"])
async def test_second_soft_delete_fails_resource_deleted(users, tenant: str, etag: str) -> None:
    created = await create(users, tenant, username="gus")
    deleted = await delete(users, tenant, created.id)
    sent = {"none": "", "current": deleted.etag, "stale": created.etag}[etag]

    error = await fails(delete(users, tenant, created.id, etag=sent))

    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "RESOURCE_DELETED"
    assert error.metadata["id"] == created.id
    assert await everything(users, tenant) == [deleted]


# Undelete


async def test_undelete_restores_the_user(users, tenant: str) -> None:
    created = await create(users, tenant, username="hal", display_name="Hal", is_active=False)
    deleted = await delete(users, tenant, created.id, etag=created.etag)

    restored = await undelete(users, tenant, created.id, etag=deleted.etag)

    assert not restored.HasField("delete_time")
    assert not restored.HasField("purge_time")
    assert restored.etag not in (created.etag, deleted.etag)
    assert _time(restored.update_time) >= _time(deleted.update_time)
    for field in ("id", "email", "username", "display_name", "is_active", "create_time"):
        assert getattr(restored, field) == getattr(created, field), field
    assert await get(users, tenant, created.id) == restored
    assert await listed(users, tenant) == [restored]
    assert await counted(users, tenant) == 1
    # Live again: it can be changed, and deleted again.
    changed = await update(
        users, tenant, user_pb2.User(id=created.id, etag=restored.etag, display_name="Hal 2")
    )
    assert changed.display_name == "Hal 2"
    assert (await delete(users, tenant, created.id, etag=changed.etag)).HasField("delete_time")


async def test_undelete_without_etag_is_unconditional(users, tenant: str) -> None:
    created = await create(users, tenant, username="ida")
    await delete(users, tenant, created.id)

    restored = await undelete(users, tenant, created.id)

    assert not restored.HasField("delete_time")
    assert await get(users, tenant, created.id) == restored


@pytest.mark.parametrize("with_etag", [False, True], ids=["no-etag", "current-etag"])
async def test_undelete_of_a_live_user_is_already_exists(
    users, tenant: str, with_etag: bool
) -> None:
    created = await create(users, tenant, username="jan")

    error = await fails(undelete(users, tenant, created.id, etag=created.etag if with_etag else ""))

    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "RESOURCE_NOT_DELETED"
    assert error.metadata["id"] == created.id
    assert error.metadata["resource_type"] == "user"
    assert await everything(users, tenant) == [created]


async def test_undelete_with_a_stale_etag_is_aborted(users, tenant: str) -> None:
    created = await create(users, tenant, username="kim")
    deleted = await delete(users, tenant, created.id)

    error = await fails(undelete(users, tenant, created.id, etag=created.etag))

    assert error.code == grpc.StatusCode.ABORTED
    assert error.reason == "ETAG_MISMATCH"
    assert error.metadata["id"] == created.id
    assert await everything(users, tenant) == [deleted]
    # The current etag still works.
    assert not (await undelete(users, tenant, created.id, etag=deleted.etag)).HasField(
        "delete_time"
    )


async def test_undelete_of_a_missing_or_purged_user_is_not_found(users, tenant: str) -> None:
    created = await create(users, tenant, username="lea")
    await delete(users, tenant, created.id, force=True)

    for id_ in (created.id, str(uuid.uuid4())):
        error = await fails(undelete(users, tenant, id_))
        assert error.code == grpc.StatusCode.NOT_FOUND
        assert error.reason == "RESOURCE_NOT_FOUND"
        assert error.metadata["id"] == id_


# Force


async def test_force_delete_of_a_live_user_removes_it(users, tenant: str) -> None:
    created = await create(users, tenant, username="max")
    bystander = await create(users, tenant, username="ned")

    purged = await delete(users, tenant, created.id, etag=created.etag, force=True)

    assert purged == created  # as it was left: nothing was written before it went
    error = await fails(get(users, tenant, created.id))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "RESOURCE_NOT_FOUND"
    assert await everything(users, tenant) == [bystander]


async def test_force_delete_of_a_soft_deleted_user_removes_it(users, tenant: str) -> None:
    created = await create(users, tenant, username="ola")
    deleted = await delete(users, tenant, created.id)

    purged = await delete(users, tenant, created.id, etag=deleted.etag, force=True)

    assert purged == deleted
    error = await fails(get(users, tenant, created.id))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert await everything(users, tenant) == []
    assert await counted(users, tenant, show_deleted=True) == 0


async def test_force_delete_with_a_stale_etag_is_aborted(users, tenant: str) -> None:
    created = await create(users, tenant, username="pia")
    deleted = await delete(users, tenant, created.id)

    error = await fails(delete(users, tenant, created.id, etag=created.etag, force=True))

    assert error.code == grpc.StatusCode.ABORTED
    assert error.reason == "ETAG_MISMATCH"
    assert await everything(users, tenant) == [deleted]


async def test_force_delete_of_a_missing_id_is_not_found(users, tenant: str) -> None:
    created = await create(users, tenant, username="quy")
    missing = str(uuid.uuid4())

    error = await fails(delete(users, tenant, missing, force=True))

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "RESOURCE_NOT_FOUND"
    assert error.metadata["id"] == missing
    assert await everything(users, tenant) == [created]
    # And once purged, a user is missing too.
    await delete(users, tenant, created.id, force=True)
    again = await fails(delete(users, tenant, created.id, force=True))
    assert again.code == grpc.StatusCode.NOT_FOUND
    assert again.metadata["id"] == created.id


# Uniqueness ignores soft-deleted users


@pytest.mark.parametrize("case", [str, str.upper], ids=["same", "upper"])
async def test_a_soft_deleted_users_email_and_username_can_be_reused(
    users, tenant: str, case: Callable[[str], str]
) -> None:
    old = await create(users, tenant, email="rex@example.com", username="rex")
    deleted = await delete(users, tenant, old.id)

    new = await create(users, tenant, email=case("rex@example.com"), username=case("rex"))

    assert new.id != old.id
    assert await listed(users, tenant) == [new]
    assert await listed(users, tenant, show_deleted=True) == [deleted, new]


async def test_a_live_user_may_be_updated_to_a_soft_deleted_users_email(users, tenant: str) -> None:
    old = await create(users, tenant, email="sal@example.com", username="sal")
    other = await create(users, tenant, email="tom@example.com", username="tom")
    await delete(users, tenant, old.id)

    moved = await update(
        users, tenant, user_pb2.User(id=other.id, email="sal@example.com", username="sal")
    )

    assert (moved.email, moved.username) == ("sal@example.com", "sal")


@pytest.mark.parametrize("field", ["email", "username"])
async def test_undelete_fails_when_a_live_user_took_a_unique_value(
    users, tenant: str, field: str
) -> None:
    old = await create(users, tenant, email="uma@example.com", username="uma")
    deleted = await delete(users, tenant, old.id)
    # The newcomer takes exactly one of the old user's unique values.
    values = {"email": "other@example.com", "username": "other", field: getattr(old, field)}
    new = await create(users, tenant, **values)

    error = await fails(undelete(users, tenant, old.id, etag=deleted.etag))

    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "RESOURCE_ALREADY_EXISTS"
    assert error.metadata["field"] == field
    assert error.metadata["resource_type"] == "user"
    assert await get(users, tenant, old.id) == deleted
    assert await everything(users, tenant) == [deleted, new]


# Tenants


async def test_another_tenants_user_cannot_be_deleted_or_undeleted(users, tenant: str) -> None:
    live = await create(users, tenant, username="vic")
    gone = await create(users, tenant, username="wes")
    gone = await delete(users, tenant, gone.id)
    intruder = tenant + "-intruder"
    await create(users, intruder, username="intruder")

    attempts: dict[str, Callable[[], Awaitable[Any]]] = {
        "delete": lambda: delete(users, intruder, live.id),
        "delete with etag": lambda: delete(users, intruder, live.id, etag=live.etag),
        "force delete": lambda: delete(users, intruder, live.id, force=True),
        "force delete of deleted": lambda: delete(users, intruder, gone.id, force=True),
        "undelete": lambda: undelete(users, intruder, gone.id),
        "undelete with etag": lambda: undelete(users, intruder, gone.id, etag=gone.etag),
        "undelete of live": lambda: undelete(users, intruder, live.id),
    }
    for name, attempt in attempts.items():
        error = await fails(attempt())
        assert error.code == grpc.StatusCode.NOT_FOUND, name
        assert error.reason == "RESOURCE_NOT_FOUND", name

    assert await everything(users, tenant) == [live, gone]


# Retention and purge


async def dedicated(start_repogate: StartRepogate, database_url: str, **settings: Any) -> Dedicated:
    """A server of the test's own on the session's database, without the purge loop."""
    return await start_repogate(database_url=database_url, purge_interval=0, **settings)


async def test_retention_schedules_the_purge_and_undelete_cancels_it(
    start_repogate: StartRepogate, database_url: str, tenant: str
) -> None:
    server = await dedicated(start_repogate, database_url, soft_delete_retention=3600)
    created = await create(server.users, tenant, username="xan")

    deleted = await delete(server.users, tenant, created.id)

    assert deleted.HasField("purge_time")
    assert _time(deleted.purge_time) - _time(deleted.delete_time) == HOUR
    assert await get(server.users, tenant, created.id) == deleted

    restored = await undelete(server.users, tenant, created.id)

    assert not restored.HasField("delete_time")
    assert not restored.HasField("purge_time")
    assert await get(server.users, tenant, created.id) == restored

    again = await delete(server.users, tenant, created.id)
    assert _time(again.purge_time) - _time(again.delete_time) == HOUR
    assert _time(again.delete_time) >= _time(deleted.delete_time)


async def test_purge_due_removes_deleted_users_past_their_purge_time(
    start_repogate: StartRepogate, database_url: str, database: Database, users, tenant: str
) -> None:
    hourly = await dedicated(start_repogate, database_url, soft_delete_retention=3600)
    two_hourly = await dedicated(start_repogate, database_url, soft_delete_retention=7200)
    other_tenant = tenant + "-other"

    live = await create(hourly.users, tenant, username="live")
    due = await create(hourly.users, tenant, username="due")
    due = await delete(hourly.users, tenant, due.id)
    later = await create(two_hourly.users, tenant, username="later")
    later = await delete(two_hourly.users, tenant, later.id)
    kept = await create(users, tenant, username="kept")  # deleted without retention
    kept = await delete(users, tenant, kept.id)
    elsewhere = await create(hourly.users, other_tenant, username="due")
    elsewhere = await delete(hourly.users, other_tenant, elsewhere.id)
    now = _time(due.purge_time) + timedelta(minutes=1)
    assert _time(elsewhere.purge_time) <= now < _time(later.purge_time)
    assert not kept.HasField("purge_time")

    purged = await purge_due(database, now=now)

    assert purged["users"] >= 2  # other tests' rows may be due too: the purge spans tenants
    error = await fails(get(users, tenant, due.id))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert (await fails(get(users, other_tenant, elsewhere.id))).code == grpc.StatusCode.NOT_FOUND
    assert await everything(users, tenant) == [live, later, kept]
    assert await everything(users, other_tenant) == []


async def test_purge_due_removes_expired_request_ids(
    start_repogate: StartRepogate, database_url: str, database: Database, users, tenant: str
) -> None:
    brief = await dedicated(start_repogate, database_url, request_id_ttl=60)
    short_id, long_id = str(uuid.uuid4()), str(uuid.uuid4())

    def request(request_id: str, name: str) -> user_pb2.CreateUserRequest:
        user = user_pb2.User(email=f"{name}@example.com", username=name)
        return user_pb2.CreateUserRequest(user=user, request_id=request_id)

    short = await brief.users.CreateUser(request(short_id, "short"), metadata=md(tenant))
    long = await users.CreateUser(request(long_id, "long"), metadata=md(tenant))
    # Before the purge, a retry replays the first answer.
    assert await brief.users.CreateUser(request(short_id, "short"), metadata=md(tenant)) == short

    async def remembered() -> set[str]:
        stmt = select(request_ids.c.id).where(request_ids.c.tenant_id == tenant)
        async with database.engine.connect() as conn:
            return {str(id_) for id_ in (await conn.execute(stmt)).scalars()}

    assert await remembered() == {short_id, long_id}

    purged = await purge_due(database, now=datetime.now(UTC) + 2 * HOUR)

    assert purged["request_ids"] >= 1
    assert await remembered() == {long_id}
    # The short id is forgotten: a retry is a new create, which collides with the first.
    error = await fails(brief.users.CreateUser(request(short_id, "short"), metadata=md(tenant)))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "RESOURCE_ALREADY_EXISTS"
    # Both unique values collide; which one the database names first is its own choice.
    assert error.metadata["field"] in ("email", "username")
    assert await users.CreateUser(request(long_id, "long"), metadata=md(tenant)) == long
    # The users themselves are live and stay.
    assert await everything(users, tenant) == [short, long]


# Audit: created_by and updated_by from x-actor-id


async def test_the_actor_is_recorded_by_every_write(users, tenant: str) -> None:
    created = await users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(email="yul@example.com", username="yul")),
        metadata=md(tenant, x_actor_id="alice"),
    )
    assert (created.created_by, created.updated_by) == ("alice", "alice")

    updated = await users.UpdateUser(
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=created.id, display_name="Yul")),
        metadata=md(tenant, x_actor_id="bob"),
    )
    assert (updated.created_by, updated.updated_by) == ("alice", "bob")

    deleted = await delete(users, tenant, created.id, actor="svc:carol")
    assert (deleted.created_by, deleted.updated_by) == ("alice", "svc:carol")

    restored = await undelete(users, tenant, created.id, actor="Dave Smith")
    assert (restored.created_by, restored.updated_by) == ("alice", "Dave Smith")
    assert await get(users, tenant, created.id) == restored


async def test_without_an_actor_the_audit_fields_are_empty(users, tenant: str) -> None:
    created = await create(users, tenant, username="zed")
    assert (created.created_by, created.updated_by) == ("", "")
    deleted = await delete(users, tenant, created.id)
    assert (deleted.created_by, deleted.updated_by) == ("", "")

    # A write without an actor after one with it: the last writer is unknown.
    signed = await users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(email="amy@example.com", username="amy")),
        metadata=md(tenant, x_actor_id="alice"),
    )
    anonymous = await update(users, tenant, user_pb2.User(id=signed.id, display_name="Amy"))
    assert (anonymous.created_by, anonymous.updated_by) == ("alice", "")
    assert await get(users, tenant, signed.id) == anonymous


async def test_an_actor_of_256_characters_is_accepted(users, tenant: str) -> None:
    actor = "a" * 256

    created = await users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(email="bo@example.com", username="bo")),
        metadata=md(tenant, x_actor_id=actor),
    )

    assert (created.created_by, created.updated_by) == (actor, actor)
    assert await get(users, tenant, created.id) == created


Metadata = tuple[tuple[str, str], ...]
Call = Callable[[Stub, Metadata, user_pb2.User, user_pb2.User], Any]
CALLS: dict[str, Call] = {
    "create": lambda s, m, live, gone: s.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(email="new@example.com", username="new")),
        metadata=m,
    ),
    "update": lambda s, m, live, gone: s.UpdateUser(
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=live.id, display_name="x")), metadata=m
    ),
    "delete": lambda s, m, live, gone: s.DeleteUser(
        user_pb2.DeleteUserRequest(id=live.id), metadata=m
    ),
    "force delete": lambda s, m, live, gone: s.DeleteUser(
        user_pb2.DeleteUserRequest(id=gone.id, force=True), metadata=m
    ),
    "undelete": lambda s, m, live, gone: s.UndeleteUser(
        user_pb2.UndeleteUserRequest(id=gone.id), metadata=m
    ),
    # Every call of a tenant-scoped service checks the actor, reads too.
    "get": lambda s, m, live, gone: s.GetUser(user_pb2.GetUserRequest(id=live.id), metadata=m),
    "list": lambda s, m, live, gone: s.ListUsers(user_pb2.ListUsersRequest(), metadata=m),
}


@pytest.mark.parametrize("call", sorted(CALLS))
async def test_an_overlong_actor_is_rejected_and_nothing_is_written(
    users, tenant: str, call: str
) -> None:
    live = await create(users, tenant, username="live")
    gone = await create(users, tenant, username="gone")
    gone = await delete(users, tenant, gone.id)
    before = await everything(users, tenant)

    error = await fails(CALLS[call](users, md(tenant, x_actor_id="a" * 257), live, gone))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_ACTOR"
    assert list(error.violations) == ["x-actor-id"]
    assert await everything(users, tenant) == before == [live, gone]
