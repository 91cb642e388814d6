"""UserService's domain RPCs through the real server: look-ups by email and
username, RecordLogin, and CheckUserExists."""

from __future__ import annotations

import uuid

import grpc
import pytest

from repogate.v1 import user_pb2 as pb
from tests.e2e.domain import Stubs, new_user
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

NOT_FOUND = grpc.StatusCode.NOT_FOUND


async def by_email(s: Stubs, tenant: str, email: str) -> pb.User:
    return await s.users.GetUserByEmail(pb.GetUserByEmailRequest(email=email), metadata=md(tenant))


async def by_username(s: Stubs, tenant: str, username: str) -> pb.User:
    return await s.users.GetUserByUsername(
        pb.GetUserByUsernameRequest(username=username), metadata=md(tenant)
    )


async def taken(s: Stubs, tenant: str, email: str = "", username: str = "") -> tuple[bool, bool]:
    response = await s.users.CheckUserExists(
        pb.CheckUserExistsRequest(email=email, username=username), metadata=md(tenant)
    )
    return response.email_taken, response.username_taken


async def test_look_ups_ignore_case(stubs: Stubs, tenant: str) -> None:
    ann = await new_user(stubs, tenant, "Ann.Lee")
    await new_user(stubs, tenant, "bob")

    assert await by_email(stubs, tenant, "ANN.LEE@EXAMPLE.COM") == ann
    assert await by_email(stubs, tenant, "ann.lee@example.com") == ann
    assert await by_username(stubs, tenant, "ann.LEE") == ann


async def test_look_ups_see_live_users_of_the_tenant_only(stubs: Stubs, tenant: str) -> None:
    gone = await new_user(stubs, tenant, "gone")
    await stubs.users.DeleteUser(pb.DeleteUserRequest(id=gone.id), metadata=md(tenant))
    await new_user(stubs, tenant + "-other", "theirs")

    for call in (
        by_email(stubs, tenant, "gone@example.com"),
        by_username(stubs, tenant, "gone"),
        by_email(stubs, tenant, "theirs@example.com"),
        by_username(stubs, tenant, "theirs"),
    ):
        assert (await fails(call)).code == NOT_FOUND
    # A new user may take a deleted one's email; the look-up finds the live one.
    again = await new_user(stubs, tenant, "gone")
    assert await by_email(stubs, tenant, "gone@example.com") == again


async def test_look_ups_check_their_input(stubs: Stubs, tenant: str) -> None:
    bad_email = await fails(by_email(stubs, tenant, "not an email"))
    bad_username = await fails(by_username(stubs, tenant, "has space"))

    assert list(bad_email.violations) == ["email"]
    assert list(bad_username.violations) == ["username"]


async def test_record_login_sets_last_login_time(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    assert not user.HasField("last_login_time")

    first = await stubs.users.RecordLogin(pb.RecordLoginRequest(id=user.id), metadata=md(tenant))
    second = await stubs.users.RecordLogin(pb.RecordLoginRequest(id=user.id), metadata=md(tenant))

    assert first.HasField("last_login_time")
    assert second.last_login_time.ToDatetime() > first.last_login_time.ToDatetime()
    assert second.etag != first.etag
    got = await stubs.users.GetUser(pb.GetUserRequest(id=user.id), metadata=md(tenant))
    assert got == second
    listed = await stubs.users.ListUsers(
        pb.ListUsersRequest(filter=f'last_login_time >= "{_rfc3339(first)}"'),
        metadata=md(tenant),
    )
    assert [u.id for u in listed.users] == [user.id]


def _rfc3339(user: pb.User) -> str:
    return user.last_login_time.ToJsonString()


async def test_record_login_of_a_missing_or_deleted_user(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    await stubs.users.DeleteUser(pb.DeleteUserRequest(id=user.id), metadata=md(tenant))

    deleted = await fails(
        stubs.users.RecordLogin(pb.RecordLoginRequest(id=user.id), metadata=md(tenant))
    )
    missing = await fails(
        stubs.users.RecordLogin(pb.RecordLoginRequest(id=str(uuid.uuid4())), metadata=md(tenant))
    )

    assert (deleted.code, deleted.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESOURCE_DELETED",
    )
    assert missing.code == NOT_FOUND


async def test_check_user_exists_answers_for_each_field(stubs: Stubs, tenant: str) -> None:
    await new_user(stubs, tenant, "ann")
    gone = await new_user(stubs, tenant, "gone")
    await stubs.users.DeleteUser(pb.DeleteUserRequest(id=gone.id), metadata=md(tenant))

    assert await taken(stubs, tenant, "ANN@example.com", "nobody") == (True, False)
    assert await taken(stubs, tenant, "nobody@example.com", "Ann") == (False, True)
    assert await taken(stubs, tenant, "ann@example.com", "ann") == (True, True)
    assert await taken(stubs, tenant, username="ann") == (False, True)
    assert await taken(stubs, tenant, email="gone@example.com", username="gone") == (False, False)
    assert await taken(stubs, tenant + "-other", "ann@example.com", "ann") == (False, False)


async def test_check_user_exists_checks_its_input(stubs: Stubs, tenant: str) -> None:
    neither = await fails(taken(stubs, tenant))
    malformed = await fails(taken(stubs, tenant, "x", "ok"))

    assert neither.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(malformed.violations) == ["email"]
