"""UserService through the real server: the standard methods and pagination."""

from __future__ import annotations

import uuid

import grpc
import pytest

from repogate.v1 import user_pb2
from tests.e2e.support import (
    all_users,
    create,
    fails,
    get,
    list_page,
    update,
    walk,
)
from tests.rpc import md

pytestmark = pytest.mark.e2e


def _ns(ts) -> int:
    return ts.ToNanoseconds()


# Create


async def test_create_applies_defaults_for_unset_fields(users, tenant: str) -> None:
    created = await create(users, tenant, email="ann@example.com", username="ann")

    assert created.email == "ann@example.com"
    assert created.username == "ann"
    assert created.display_name == ""
    assert created.HasField("is_active")
    assert created.is_active is True
    assert uuid.UUID(created.id).version == 4
    assert created.etag
    assert _ns(created.create_time) > 0
    assert created.create_time == created.update_time


async def test_create_keeps_the_fields_the_client_set(users, tenant: str) -> None:
    created = await create(
        users,
        tenant,
        email="Bo@Example.com",
        username="Bo.b-1",
        display_name="Bo B",
        is_active=False,
    )

    assert created.email == "Bo@Example.com"  # stored as given; only uniqueness ignores case
    assert created.username == "Bo.b-1"
    assert created.display_name == "Bo B"
    assert created.HasField("is_active")
    assert created.is_active is False


async def test_create_ignores_output_only_fields(users, tenant: str) -> None:
    chosen_id = str(uuid.uuid4())
    created = await create(
        users,
        tenant,
        username="cy",
        id=chosen_id,
        etag="999",
        create_time={"seconds": 86_400},
        update_time={"seconds": 86_400},
    )

    assert created.id != chosen_id
    assert created.etag != "999"
    assert _ns(created.create_time) > 86_400 * 10**9
    assert (await fails(get(users, tenant, chosen_id))).code == grpc.StatusCode.NOT_FOUND


async def test_each_create_gets_its_own_id_and_time_order(users, tenant: str) -> None:
    first = await create(users, tenant, username="first")
    second = await create(users, tenant, username="second")

    assert first.id != second.id
    assert _ns(second.create_time) > _ns(first.create_time)


# Get


async def test_get_returns_what_create_returned(users, tenant: str) -> None:
    created = await create(users, tenant, username="dee", display_name="Dee", is_active=False)

    assert await get(users, tenant, created.id) == created


async def test_get_accepts_the_id_in_upper_case(users, tenant: str) -> None:
    created = await create(users, tenant, username="eve")

    assert await get(users, tenant, created.id.upper()) == created


async def test_get_of_unknown_id_is_not_found(users, tenant: str) -> None:
    missing = str(uuid.uuid4())

    error = await fails(get(users, tenant, missing))

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "RESOURCE_NOT_FOUND"
    assert error.metadata["id"] == missing
    assert error.metadata["resource_type"] == "user"


# Update


async def test_update_with_mask_changes_only_the_masked_fields(users, tenant: str) -> None:
    created = await create(users, tenant, username="fay", display_name="Fay")

    updated = await update(
        users,
        tenant,
        # Email and is_active are populated too, but not in the mask: they must not change.
        user_pb2.User(
            id=created.id, display_name="Fay F", email="other@example.com", is_active=False
        ),
        ["display_name"],
    )

    assert updated.display_name == "Fay F"
    assert updated.email == created.email
    assert updated.username == created.username
    assert updated.is_active is True
    assert updated.id == created.id
    assert await get(users, tenant, created.id) == updated


async def test_update_mask_can_clear_a_field(users, tenant: str) -> None:
    created = await create(users, tenant, username="gus", display_name="Gus")

    updated = await update(users, tenant, user_pb2.User(id=created.id), ["display_name"])

    assert updated.display_name == ""
    assert (await get(users, tenant, created.id)).display_name == ""


async def test_update_mask_with_is_active_unset_means_false(users, tenant: str) -> None:
    created = await create(users, tenant, username="hal")
    assert created.is_active

    updated = await update(users, tenant, user_pb2.User(id=created.id), ["is_active"])

    assert updated.is_active is False


async def test_update_without_mask_changes_only_populated_fields(users, tenant: str) -> None:
    created = await create(users, tenant, username="ida", display_name="Ida")

    renamed = await update(users, tenant, user_pb2.User(id=created.id, email="ida@new.example"))

    assert renamed.email == "ida@new.example"
    assert renamed.username == "ida"
    assert renamed.display_name == "Ida"  # empty in the request, so left alone
    assert renamed.is_active is True  # unset in the request, so left alone

    deactivated = await update(users, tenant, user_pb2.User(id=created.id, is_active=False))

    assert deactivated.is_active is False  # `optional`: an explicit false counts as populated
    assert deactivated.email == "ida@new.example"
    assert deactivated.display_name == "Ida"
    assert await get(users, tenant, created.id) == deactivated


async def test_update_with_star_mask_replaces_every_updatable_field(users, tenant: str) -> None:
    created = await create(users, tenant, username="jo", display_name="Jo", is_active=True)

    replaced = await update(
        users,
        tenant,
        user_pb2.User(id=created.id, email="jo2@example.com", username="jo2"),
        ["*"],
    )

    assert replaced.email == "jo2@example.com"
    assert replaced.username == "jo2"
    assert replaced.display_name == ""
    assert replaced.is_active is False
    assert replaced.id == created.id
    assert replaced.create_time == created.create_time
    assert await get(users, tenant, created.id) == replaced


async def test_update_may_change_the_case_of_the_users_own_email(users, tenant: str) -> None:
    created = await create(users, tenant, email="kim@example.com", username="kim")

    updated = await update(users, tenant, user_pb2.User(id=created.id, email="KIM@example.com"))

    assert updated.email == "KIM@example.com"


async def test_update_with_the_current_etag_succeeds(users, tenant: str) -> None:
    created = await create(users, tenant, username="lee")

    updated = await update(
        users, tenant, user_pb2.User(id=created.id, etag=created.etag, display_name="Lee")
    )

    assert updated.display_name == "Lee"
    assert updated.etag != created.etag


async def test_every_write_changes_etag_and_advances_update_time(users, tenant: str) -> None:
    created = await create(users, tenant, username="max")
    versions = [created]
    for name in ("Max", "Max M", "Max"):  # the last one repeats an earlier value
        versions.append(
            await update(users, tenant, user_pb2.User(id=created.id, display_name=name))
        )

    etags = [user.etag for user in versions]
    assert len(set(etags)) == len(etags), etags
    update_times = [_ns(user.update_time) for user in versions]
    assert update_times == sorted(update_times)
    assert len(set(update_times)) == len(update_times)
    assert all(user.create_time == created.create_time for user in versions)


async def test_update_of_unknown_id_is_not_found(users, tenant: str) -> None:
    missing = str(uuid.uuid4())

    error = await fails(update(users, tenant, user_pb2.User(id=missing, display_name="x")))

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "RESOURCE_NOT_FOUND"
    assert error.metadata["id"] == missing


# Delete


async def test_delete_soft_deletes_and_returns_the_user_as_left(users, tenant: str) -> None:
    created = await create(users, tenant, username="ned", display_name="Ned")
    current = await update(users, tenant, user_pb2.User(id=created.id, is_active=False))

    deleted = await users.DeleteUser(
        user_pb2.DeleteUserRequest(id=created.id, etag=current.etag), metadata=md(tenant)
    )

    assert deleted.HasField("delete_time")
    assert deleted.etag != current.etag
    assert (deleted.display_name, deleted.is_active) == ("Ned", False)
    # AIP-164: Get still returns a soft-deleted resource; List hides it.
    assert await get(users, tenant, created.id) == deleted
    assert created.id not in [user.id for user in await all_users(users, tenant)]


async def test_force_delete_purges_the_user(users, tenant: str) -> None:
    created = await create(users, tenant, username="nel")

    purged = await users.DeleteUser(
        user_pb2.DeleteUserRequest(id=created.id, force=True), metadata=md(tenant)
    )

    assert purged.id == created.id
    assert not purged.HasField("delete_time")
    error = await fails(get(users, tenant, created.id))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "RESOURCE_NOT_FOUND"


async def test_delete_without_etag_is_unconditional(users, tenant: str) -> None:
    created = await create(users, tenant, username="ola")
    await update(users, tenant, user_pb2.User(id=created.id, display_name="changed"))

    deleted = await users.DeleteUser(user_pb2.DeleteUserRequest(id=created.id), metadata=md(tenant))

    assert deleted.display_name == "changed"
    assert (await get(users, tenant, created.id)).HasField("delete_time")


async def test_second_delete_says_the_user_is_already_deleted(users, tenant: str) -> None:
    created = await create(users, tenant, username="pam")
    first = await users.DeleteUser(user_pb2.DeleteUserRequest(id=created.id), metadata=md(tenant))

    error = await fails(
        users.DeleteUser(user_pb2.DeleteUserRequest(id=created.id), metadata=md(tenant))
    )

    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "RESOURCE_DELETED"
    assert await get(users, tenant, created.id) == first


async def test_a_deleted_users_email_and_username_can_be_reused(users, tenant: str) -> None:
    created = await create(users, tenant, email="quin@example.com", username="quin")
    await users.DeleteUser(user_pb2.DeleteUserRequest(id=created.id), metadata=md(tenant))

    again = await create(users, tenant, email="quin@example.com", username="quin")

    assert again.id != created.id


# List


@pytest.mark.parametrize("page_size", [1, 2, 3, 7, 8])
async def test_list_walks_every_user_once_in_create_order(
    users, tenant: str, page_size: int
) -> None:
    created = [await create(users, tenant, username=f"u{i}") for i in range(7)]

    pages = await walk(users, tenant, page_size)

    listed = [user for page in pages for user in page.users]
    assert listed == created  # whole messages: same fields, same order, each once
    assert [len(page.users) for page in pages[:-1]] == [page_size] * (len(pages) - 1)
    assert 1 <= len(pages[-1].users) <= page_size
    assert all(page.next_page_token for page in pages[:-1])
    assert pages[-1].next_page_token == ""
    assert len(pages) == -(-len(created) // page_size)


async def test_list_of_a_tenant_without_users_is_empty(users, tenant: str) -> None:
    page = await list_page(users, tenant, 10)

    assert list(page.users) == []
    assert page.next_page_token == ""


async def test_list_page_size_zero_means_fifty(users, tenant: str) -> None:
    created = [await create(users, tenant, username=f"n{i:02}") for i in range(51)]

    first = await list_page(users, tenant, 0)
    assert [u.id for u in first.users] == [u.id for u in created[:50]]
    assert first.next_page_token

    second = await list_page(users, tenant, 0, first.next_page_token)
    assert [u.id for u in second.users] == [created[50].id]
    assert second.next_page_token == ""


@pytest.mark.parametrize("page_size", [1000, 1001, 2**31 - 1])
async def test_list_accepts_page_sizes_up_to_and_over_the_maximum(
    users, tenant: str, page_size: int
) -> None:
    created = [await create(users, tenant, username=f"m{i}") for i in range(3)]

    page = await list_page(users, tenant, page_size)

    assert [u.id for u in page.users] == [u.id for u in created]
    assert page.next_page_token == ""


async def test_list_shows_only_the_callers_tenant(users, tenant: str) -> None:
    other = tenant + "-other"
    mine = [await create(users, tenant, username=f"mine{i}") for i in range(3)]
    theirs = [await create(users, other, username=f"theirs{i}") for i in range(3)]
    # Interleave so that a missing tenant filter would show up mid-page too.
    mine.append(await create(users, tenant, username="mine3"))
    theirs.append(await create(users, other, username="theirs3"))

    for page_size in (1, 2, 100):
        assert [u.id for p in await walk(users, tenant, page_size) for u in p.users] == [
            u.id for u in mine
        ]
        assert [u.id for p in await walk(users, other, page_size) for u in p.users] == [
            u.id for u in theirs
        ]


async def test_list_continues_after_the_last_seen_user_is_deleted(users, tenant: str) -> None:
    created = [await create(users, tenant, username=f"d{i}") for i in range(5)]
    first = await list_page(users, tenant, 2)
    assert [u.id for u in first.users] == [u.id for u in created[:2]]

    await users.DeleteUser(user_pb2.DeleteUserRequest(id=created[1].id), metadata=md(tenant))
    rest = await list_page(users, tenant, 10, first.next_page_token)

    assert [u.id for u in rest.users] == [u.id for u in created[2:]]
    assert rest.next_page_token == ""


async def test_list_picks_up_users_created_during_the_walk(users, tenant: str) -> None:
    created = [await create(users, tenant, username=f"w{i}") for i in range(3)]
    first = await list_page(users, tenant, 2)

    late = await create(users, tenant, username="late")
    rest = await list_page(users, tenant, 2, first.next_page_token)

    assert [u.id for u in first.users] == [u.id for u in created[:2]]
    assert [u.id for u in rest.users] == [created[2].id, late.id]
    assert rest.next_page_token == ""


async def test_list_reflects_updates(users, tenant: str) -> None:
    created = await create(users, tenant, username="rex")
    updated = await update(users, tenant, user_pb2.User(id=created.id, display_name="Rex"))

    assert await all_users(users, tenant) == [updated]
