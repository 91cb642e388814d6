"""AIP-231/233/234/235 batch methods through the real server: order, per-item errors that
name the item, limits, and all-or-nothing writes."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from repogate.v1 import user_pb2
from tests.e2e.support import Stub, all_users, create, fails, get, update_request
from tests.rpc import md

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _user(tag: str, **fields: Any) -> user_pb2.User:
    return user_pb2.User(email=f"{tag}@example.com", username=tag, **fields)


async def _batch_get(stub: Stub, tenant: str, ids: list[str]) -> list[user_pb2.User]:
    response = await stub.BatchGetUsers(user_pb2.BatchGetUsersRequest(ids=ids), metadata=md(tenant))
    return list(response.users)


async def _batch_create(stub: Stub, tenant: str, *members: user_pb2.User) -> list[user_pb2.User]:
    request = user_pb2.BatchCreateUsersRequest(
        requests=[user_pb2.CreateUserRequest(user=member) for member in members]
    )
    return list((await stub.BatchCreateUsers(request, metadata=md(tenant))).users)


async def _batch_update(
    stub: Stub, tenant: str, *items: user_pb2.UpdateUserRequest
) -> list[user_pb2.User]:
    request = user_pb2.BatchUpdateUsersRequest(requests=items)
    return list((await stub.BatchUpdateUsers(request, metadata=md(tenant))).users)


async def _batch_delete(
    stub: Stub, tenant: str, *items: user_pb2.DeleteUserRequest
) -> list[user_pb2.User]:
    request = user_pb2.BatchDeleteUsersRequest(requests=items)
    return list((await stub.BatchDeleteUsers(request, metadata=md(tenant))).users)


async def _current(stub: Stub, tenant: str, *created: user_pb2.User) -> list[user_pb2.User]:
    return [await get(stub, tenant, user.id) for user in created]


def _assert_field_error(error, field: str) -> None:
    assert error.code == INVALID, error
    assert error.reason == "INVALID_ARGUMENT", error
    assert list(error.violations) == [field], error.violations
    assert field in error.message


def _assert_not_found(error, id_: str) -> None:
    assert error.code == grpc.StatusCode.NOT_FOUND, error
    assert error.reason == "RESOURCE_NOT_FOUND"
    assert error.metadata["id"] == id_
    assert error.metadata["resource_type"] == "user"


# BatchGetUsers


async def test_batch_get_answers_in_the_order_asked(users: Stub, tenant: str) -> None:
    ann, bo, cy = [await create(users, tenant, username=name) for name in ("ann", "bo", "cy")]

    got = await _batch_get(users, tenant, [cy.id, ann.id, bo.id])

    # A repeated id is refused (tests/e2e/test_ids.py).
    assert got == [cy, ann, bo]


async def test_batch_get_returns_soft_deleted_users_as_get_does(users: Stub, tenant: str) -> None:
    live = await create(users, tenant, username="live")
    gone = await create(users, tenant, username="gone")
    deleted = await users.DeleteUser(user_pb2.DeleteUserRequest(id=gone.id), metadata=md(tenant))

    assert await _batch_get(users, tenant, [gone.id, live.id]) == [deleted, live]


async def test_batch_get_with_a_missing_id_is_not_found_naming_the_first_missing(
    users: Stub, tenant: str
) -> None:
    known = await create(users, tenant, username="dee")
    missing, also_missing = str(uuid.uuid4()), str(uuid.uuid4())

    _assert_not_found(await fails(_batch_get(users, tenant, [known.id, missing])), missing)
    _assert_not_found(
        await fails(_batch_get(users, tenant, [known.id, also_missing, missing])),
        also_missing,
    )


async def test_batch_get_of_another_tenants_user_is_not_found(users: Stub, tenant: str) -> None:
    mine = await create(users, tenant, username="eve")
    theirs = await create(users, tenant + "-other", username="eve")

    _assert_not_found(await fails(_batch_get(users, tenant, [mine.id, theirs.id])), theirs.id)


@pytest.mark.parametrize(("index", "bad"), [(0, "nope"), (2, ""), (1, "123")])
async def test_batch_get_with_a_malformed_id_names_its_index(
    users: Stub, tenant: str, index: int, bad: str
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    ids[index] = bad

    _assert_field_error(await fails(_batch_get(users, tenant, ids)), f"ids[{index}]")


@pytest.mark.parametrize("count", [0, 1001])
async def test_batch_get_of_no_ids_or_too_many_is_invalid(
    users: Stub, tenant: str, count: int
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(count)]

    _assert_field_error(await fails(_batch_get(users, tenant, ids)), "ids")


# BatchCreateUsers


async def test_batch_create_creates_every_user_in_the_order_given(users: Stub, tenant: str) -> None:
    created = await _batch_create(
        users,
        tenant,
        _user("fay", display_name="Fay"),
        _user("gus", is_active=False),
        _user("hal"),
    )

    assert [(u.username, u.email) for u in created] == [
        ("fay", "fay@example.com"),
        ("gus", "gus@example.com"),
        ("hal", "hal@example.com"),
    ]
    assert [(u.display_name, u.is_active) for u in created] == [
        ("Fay", True),
        ("", False),
        ("", True),
    ]
    assert len({u.id for u in created}) == 3
    assert all(u.etag == "1" and u.HasField("create_time") for u in created)
    assert await _current(users, tenant, *created) == created
    assert sorted(u.id for u in await all_users(users, tenant)) == sorted(u.id for u in created)


@pytest.mark.parametrize(
    ("index", "bad", "field"),
    [
        (1, user_pb2.User(email="not-an-email", username="ok1"), "requests[1].user.email"),
        (2, user_pb2.User(email="ok2@example.com"), "requests[2].user.username"),
        (0, _user("ok0", display_name="x" * 257), "requests[0].user.display_name"),
    ],
)
async def test_batch_create_item_errors_name_the_item_and_nothing_is_written(
    users: Stub, tenant: str, index: int, bad: user_pb2.User, field: str
) -> None:
    members = [_user(f"item{i}") for i in range(3)]
    members[index] = bad

    _assert_field_error(await fails(_batch_create(users, tenant, *members)), field)
    assert await all_users(users, tenant) == []


@pytest.mark.parametrize(
    ("members", "field"),
    [
        (
            [_user("ida"), _user("jo"), user_pb2.User(email="IDA@Example.COM", username="ida2")],
            "requests[2].user.email",
        ),
        (
            [_user("kim"), user_pb2.User(email="kim2@example.com", username="KIM")],
            "requests[1].user.username",
        ),
    ],
    ids=["email", "username"],
)
async def test_batch_create_refuses_a_unique_field_twice_ignoring_case(
    users: Stub, tenant: str, members: list[user_pb2.User], field: str
) -> None:
    error = await fails(_batch_create(users, tenant, *members))

    _assert_field_error(error, field)
    assert "item 0" in error.violations[field]
    assert await all_users(users, tenant) == []


async def test_batch_create_conflicting_with_an_existing_user_writes_nothing(
    users: Stub, tenant: str
) -> None:
    existing = await create(users, tenant, email="lee@example.com", username="lee")

    error = await fails(
        _batch_create(
            users,
            tenant,
            _user("first"),
            user_pb2.User(email="LEE@example.com", username="second"),
            _user("third"),
        )
    )

    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "RESOURCE_ALREADY_EXISTS"
    assert error.metadata["field"] == "email"
    assert await all_users(users, tenant) == [existing]
    listed = await users.ListUsers(
        user_pb2.ListUsersRequest(show_deleted=True), metadata=md(tenant)
    )
    assert list(listed.users) == [existing]


async def test_batch_create_takes_a_thousand_users(users: Stub, tenant: str) -> None:
    members = [_user(f"m{i:04}") for i in range(1000)]

    created = await _batch_create(users, tenant, *members)

    assert [u.username for u in created] == [m.username for m in members]
    assert len({u.id for u in created}) == 1000
    assert await _batch_get(users, tenant, [u.id for u in created]) == created
    assert len(await all_users(users, tenant)) == 1000


@pytest.mark.parametrize("count", [0, 1001])
async def test_batch_create_of_no_users_or_too_many_is_invalid(
    users: Stub, tenant: str, count: int
) -> None:
    members = [_user(f"n{i:04}") for i in range(count)]

    _assert_field_error(await fails(_batch_create(users, tenant, *members)), "requests")
    assert await all_users(users, tenant) == []


# BatchUpdateUsers


async def test_batch_update_applies_each_items_mask_and_etag(users: Stub, tenant: str) -> None:
    ann, bo, cy = await _batch_create(
        users, tenant, _user("ann2", display_name="Ann"), _user("bo2"), _user("cy2")
    )

    updated = await _batch_update(
        users,
        tenant,
        # Masked: display_name changes, the populated email does not.
        update_request(
            user_pb2.User(id=ann.id, etag=ann.etag, display_name="Ann A", email="x@example.com"),
            ["display_name"],
        ),
        # Masked with is_active unset: false.
        update_request(user_pb2.User(id=bo.id), ["is_active"]),
        # No mask: every populated field.
        update_request(user_pb2.User(id=cy.id, email="cy-new@example.com")),
    )

    assert [u.id for u in updated] == [ann.id, bo.id, cy.id]
    assert (updated[0].display_name, updated[0].email) == ("Ann A", ann.email)
    assert (updated[1].is_active, updated[1].display_name) == (False, bo.display_name)
    assert (updated[2].email, updated[2].username) == ("cy-new@example.com", "cy2")
    assert [u.etag for u in updated] == ["2", "2", "2"]
    assert await _current(users, tenant, ann, bo, cy) == updated


async def test_batch_update_with_one_stale_etag_changes_no_user(users: Stub, tenant: str) -> None:
    dee, eve = await _batch_create(users, tenant, _user("dee2"), _user("eve2"))
    eve_now = await users.UpdateUser(
        update_request(user_pb2.User(id=eve.id, display_name="Eve")), metadata=md(tenant)
    )

    error = await fails(
        _batch_update(
            users,
            tenant,
            update_request(user_pb2.User(id=dee.id, etag=dee.etag, display_name="changed")),
            update_request(user_pb2.User(id=eve.id, etag=eve.etag, display_name="changed")),
        )
    )

    assert error.code == grpc.StatusCode.ABORTED
    assert error.reason == "ETAG_MISMATCH"
    assert error.metadata["id"] == eve.id
    assert await _current(users, tenant, dee, eve) == [dee, eve_now]


async def test_batch_update_of_a_missing_user_changes_no_user(users: Stub, tenant: str) -> None:
    (fay,) = await _batch_create(users, tenant, _user("fay2"))
    missing = str(uuid.uuid4())

    error = await fails(
        _batch_update(
            users,
            tenant,
            update_request(user_pb2.User(id=fay.id, display_name="changed")),
            update_request(user_pb2.User(id=missing, display_name="changed")),
        )
    )

    _assert_not_found(error, missing)
    assert await _current(users, tenant, fay) == [fay]


async def test_batch_update_naming_a_user_twice_is_invalid(users: Stub, tenant: str) -> None:
    gus, hal = await _batch_create(users, tenant, _user("gus2"), _user("hal2"))

    error = await fails(
        _batch_update(
            users,
            tenant,
            update_request(user_pb2.User(id=gus.id, display_name="one")),
            update_request(user_pb2.User(id=hal.id, display_name="two")),
            update_request(user_pb2.User(id=gus.id.upper(), display_name="three")),
        )
    )

    _assert_field_error(error, "requests[2].user.id")
    assert await _current(users, tenant, gus, hal) == [gus, hal]


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (
            lambda id_: update_request(user_pb2.User(id=id_, display_name="x"), ["nickname"]),
            "requests[1].update_mask",
        ),
        (
            lambda id_: update_request(user_pb2.User(id=id_, email="nope")),
            "requests[1].user.email",
        ),
        (
            lambda id_: update_request(user_pb2.User(id=id_, etag="v1", display_name="x")),
            "requests[1].user.etag",
        ),
        (
            lambda id_: update_request(user_pb2.User(id="nope", display_name="x")),
            "requests[1].user.id",
        ),
        (lambda id_: update_request(user_pb2.User(id=id_)), "requests[1].update_mask"),
    ],
    ids=["unknown-mask-path", "bad-email", "bad-etag", "bad-id", "nothing-to-update"],
)
async def test_batch_update_item_errors_name_the_item(
    users: Stub, tenant: str, item, field: str
) -> None:
    ida, jo = await _batch_create(users, tenant, _user("ida2"), _user("jo2"))

    error = await fails(
        _batch_update(
            users,
            tenant,
            update_request(user_pb2.User(id=ida.id, display_name="changed")),
            item(jo.id),
        )
    )

    _assert_field_error(error, field)
    assert await _current(users, tenant, ida, jo) == [ida, jo]


@pytest.mark.parametrize("count", [0, 1001])
async def test_batch_update_of_no_users_or_too_many_is_invalid(
    users: Stub, tenant: str, count: int
) -> None:
    items = [
        update_request(user_pb2.User(id=str(uuid.uuid4()), display_name="x")) for _ in range(count)
    ]

    _assert_field_error(await fails(_batch_update(users, tenant, *items)), "requests")


# BatchDeleteUsers


async def test_batch_delete_soft_deletes_and_purges_per_item(users: Stub, tenant: str) -> None:
    kim, lee, max_, ned = await _batch_create(
        users, tenant, _user("kim3"), _user("lee3"), _user("max3"), _user("ned3")
    )

    deleted = await _batch_delete(
        users,
        tenant,
        user_pb2.DeleteUserRequest(id=kim.id),
        user_pb2.DeleteUserRequest(id=lee.id, force=True),
        user_pb2.DeleteUserRequest(id=max_.id, etag=max_.etag),
    )

    assert [u.id for u in deleted] == [kim.id, lee.id, max_.id]
    assert [u.HasField("delete_time") for u in deleted] == [True, False, True]
    assert (deleted[0].etag, deleted[1].etag, deleted[2].etag) == ("2", "1", "2")
    assert await get(users, tenant, kim.id) == deleted[0]
    assert await get(users, tenant, max_.id) == deleted[2]
    _assert_not_found(await fails(get(users, tenant, lee.id)), lee.id)
    assert await all_users(users, tenant) == [ned]


async def test_batch_delete_with_force_purges_a_soft_deleted_user(users: Stub, tenant: str) -> None:
    (ola,) = await _batch_create(users, tenant, _user("ola3"))
    await _batch_delete(users, tenant, user_pb2.DeleteUserRequest(id=ola.id))

    (purged,) = await _batch_delete(
        users, tenant, user_pb2.DeleteUserRequest(id=ola.id, force=True)
    )

    assert purged.id == ola.id
    assert purged.HasField("delete_time")  # the user as it was left: soft-deleted, then purged
    _assert_not_found(await fails(get(users, tenant, ola.id)), ola.id)


async def test_batch_delete_of_a_missing_user_deletes_nothing(users: Stub, tenant: str) -> None:
    pam, quin = await _batch_create(users, tenant, _user("pam3"), _user("quin3"))
    missing = str(uuid.uuid4())

    error = await fails(
        _batch_delete(
            users,
            tenant,
            user_pb2.DeleteUserRequest(id=pam.id),
            user_pb2.DeleteUserRequest(id=missing),
            user_pb2.DeleteUserRequest(id=quin.id, force=True),
        )
    )

    _assert_not_found(error, missing)
    assert await _current(users, tenant, pam, quin) == [pam, quin]


async def test_batch_delete_with_one_stale_etag_deletes_nothing(users: Stub, tenant: str) -> None:
    rex, roy = await _batch_create(users, tenant, _user("rex3"), _user("roy3"))
    roy_now = await users.UpdateUser(
        update_request(user_pb2.User(id=roy.id, display_name="Roy")), metadata=md(tenant)
    )

    for force in (False, True):
        error = await fails(
            _batch_delete(
                users,
                tenant,
                user_pb2.DeleteUserRequest(id=rex.id, etag=rex.etag),
                user_pb2.DeleteUserRequest(id=roy.id, etag=roy.etag, force=force),
            )
        )

        assert error.code == grpc.StatusCode.ABORTED
        assert error.reason == "ETAG_MISMATCH"
        assert error.metadata["id"] == roy.id
        assert await _current(users, tenant, rex, roy) == [rex, roy_now]


async def test_batch_soft_delete_of_a_deleted_user_deletes_nothing(
    users: Stub, tenant: str
) -> None:
    sam, tia = await _batch_create(users, tenant, _user("sam3"), _user("tia3"))
    (tia_deleted,) = await _batch_delete(users, tenant, user_pb2.DeleteUserRequest(id=tia.id))

    error = await fails(
        _batch_delete(
            users,
            tenant,
            user_pb2.DeleteUserRequest(id=sam.id, force=True),
            user_pb2.DeleteUserRequest(id=tia.id),
        )
    )

    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "RESOURCE_DELETED"
    assert error.metadata["id"] == tia.id
    assert await _current(users, tenant, sam, tia) == [sam, tia_deleted]


@pytest.mark.parametrize(
    ("second", "field"),
    [
        (lambda id_: user_pb2.DeleteUserRequest(id=id_.upper(), force=True), "requests[1].id"),
        (lambda id_: user_pb2.DeleteUserRequest(id="nope"), "requests[1].id"),
        (
            lambda id_: user_pb2.DeleteUserRequest(id=str(uuid.uuid4()), etag="x"),
            "requests[1].etag",
        ),
    ],
    ids=["same-user-twice", "bad-id", "bad-etag"],
)
async def test_batch_delete_item_errors_name_the_item(
    users: Stub, tenant: str, second, field: str
) -> None:
    (uma,) = await _batch_create(users, tenant, _user("uma3"))

    error = await fails(
        _batch_delete(users, tenant, user_pb2.DeleteUserRequest(id=uma.id), second(uma.id))
    )

    _assert_field_error(error, field)
    assert await _current(users, tenant, uma) == [uma]


@pytest.mark.parametrize("count", [0, 1001])
async def test_batch_delete_of_no_users_or_too_many_is_invalid(
    users: Stub, tenant: str, count: int
) -> None:
    items = [user_pb2.DeleteUserRequest(id=str(uuid.uuid4())) for _ in range(count)]

    _assert_field_error(await fails(_batch_delete(users, tenant, *items)), "requests")
