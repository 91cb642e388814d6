"""AIP-193 errors through the real server: status code, ErrorInfo reason and field
violations; and that a failed call leaves the database as it was."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc import aio

from repogate.v1 import user_pb2
from repositories.errors import InvalidArgument
from server.context import validate_tenant
from tests.e2e.support import (
    Stub,
    all_users,
    create,
    fails,
    get,
    list_page,
    update,
    update_request,
    walk,
)
from tests.rpc import details, md

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT
SOME_ID = "0b1c6f0e-8f4f-4c59-9d7e-3c2b8f7a6e51"


def _calls() -> dict[str, Callable[[Stub, Any], Any]]:
    """One valid-looking request per RPC, to be sent with the metadata given."""
    user = user_pb2.User(email="x@example.com", username="x")
    return {
        "CreateUser": lambda s, m: s.CreateUser(user_pb2.CreateUserRequest(user=user), metadata=m),
        "GetUser": lambda s, m: s.GetUser(user_pb2.GetUserRequest(id=SOME_ID), metadata=m),
        "ListUsers": lambda s, m: s.ListUsers(user_pb2.ListUsersRequest(), metadata=m),
        "UpdateUser": lambda s, m: s.UpdateUser(
            update_request(user_pb2.User(id=SOME_ID, display_name="x")), metadata=m
        ),
        "DeleteUser": lambda s, m: s.DeleteUser(user_pb2.DeleteUserRequest(id=SOME_ID), metadata=m),
    }


CALLS = _calls()


def assert_field_error(error, field: str, *, reason: str = "INVALID_ARGUMENT") -> None:
    assert error.code == INVALID, error
    assert error.reason == reason, error
    assert list(error.violations) == [field], error.violations
    assert error.violations[field]
    assert field in error.message


# The tenant


@pytest.mark.parametrize("rpc", sorted(CALLS))
async def test_missing_tenant_is_rejected_by_every_method(users, rpc: str) -> None:
    error = await fails(CALLS[rpc](users, md(None)))

    assert_field_error(error, "x-tenant-id", reason="INVALID_TENANT")


@pytest.mark.parametrize(
    "bad_tenant",
    ["", "x" * 129, "a b", "a/b", "a:b", "a@b", " a", "a,b"],
    ids=["empty", "129-chars", "space", "slash", "colon", "at", "leading-space", "comma"],
)
@pytest.mark.parametrize("rpc", sorted(CALLS))
async def test_malformed_tenant_is_rejected(users, rpc: str, bad_tenant: str) -> None:
    error = await fails(CALLS[rpc](users, md(bad_tenant)))

    assert_field_error(error, "x-tenant-id", reason="INVALID_TENANT")


async def test_malformed_tenant_is_rejected_before_anything_is_written(users) -> None:
    await fails(create(users, "a b", username="ghost"))

    # No "cleaned" form of the tenant got the row either.
    for tenant in ("a", "b", "ab", "a_b", "a-b", "a.b"):
        assert await all_users(users, tenant) == []


async def test_tenant_of_128_characters_is_accepted(users) -> None:
    tenant = (uuid.uuid4().hex * 4)[:128]

    created = await create(users, tenant, username="long")

    assert await get(users, tenant, created.id) == created


async def test_non_ascii_tenant_never_reaches_a_tenant(users) -> None:
    # gRPC clients refuse non-ASCII header values before sending, so an "ä"
    # tenant cannot arrive over the wire from one; should another client send
    # it anyway, the server's own check rejects it.
    with pytest.raises(Exception) as err:  # noqa: PT011 - the client's error type is internal
        await create(users, "ä", username="umlaut")
    if isinstance(err.value, aio.AioRpcError):
        assert_field_error(details(err.value), "x-tenant-id", reason="INVALID_TENANT")
    with pytest.raises(InvalidArgument) as rejected:
        validate_tenant("ä")
    assert rejected.value.reason == "INVALID_TENANT"
    assert [v.field for v in rejected.value.violations] == ["x-tenant-id"]


# Malformed ids and etags


@pytest.mark.parametrize("bad_id", ["", "not-a-uuid", "1234", SOME_ID + "0", "../" + SOME_ID])
async def test_get_with_malformed_id(users, tenant: str, bad_id: str) -> None:
    error = await fails(get(users, tenant, bad_id))

    assert_field_error(error, "id")


@pytest.mark.parametrize("bad_id", ["", "not-a-uuid", SOME_ID[:-1]])
async def test_delete_with_malformed_id(users, tenant: str, bad_id: str) -> None:
    error = await fails(
        users.DeleteUser(user_pb2.DeleteUserRequest(id=bad_id), metadata=md(tenant))
    )

    assert_field_error(error, "id")


@pytest.mark.parametrize("bad_id", ["", "not-a-uuid", SOME_ID[:-1]])
async def test_update_with_malformed_id(users, tenant: str, bad_id: str) -> None:
    error = await fails(update(users, tenant, user_pb2.User(id=bad_id, display_name="x")))

    assert_field_error(error, "user.id")


@pytest.mark.parametrize(
    "etag",
    [
        "abc",
        "W/1",
        "-1",
        "1.0",
        " 1",
        "²",
        "\u0661",
        "2147483648",
        "999999999999999999",
        "1" * 5000,
    ],
)
async def test_update_with_malformed_etag(users, tenant: str, etag: str) -> None:
    created = await create(users, tenant, username="etag")

    error = await fails(
        update(users, tenant, user_pb2.User(id=created.id, etag=etag, display_name="x"))
    )

    assert_field_error(error, "user.etag")
    assert await get(users, tenant, created.id) == created


@pytest.mark.parametrize("etag", ["abc", "-1", "²", "\u0661", "2147483648"])
async def test_delete_with_malformed_etag(users, tenant: str, etag: str) -> None:
    created = await create(users, tenant, username="etag")

    error = await fails(
        users.DeleteUser(user_pb2.DeleteUserRequest(id=created.id, etag=etag), metadata=md(tenant))
    )

    assert_field_error(error, "etag")
    assert await get(users, tenant, created.id) == created


# Field validation on create and update


BAD_EMAILS = [
    "plainaddress",
    "no-domain@",
    "@no-local.example",
    "no-dot@example",
    "two@@example.com",
    "sp ace@example.com",
    "a@" + "d" * 250 + ".com",
]
BAD_USERNAMES = ["-dash-first", ".dot-first", "has space", "a" * 65, "ümlaut", "semi;colon"]


@pytest.mark.parametrize("email", BAD_EMAILS)
async def test_create_with_invalid_email(users, tenant: str, email: str) -> None:
    error = await fails(create(users, tenant, email=email, username="ok"))

    assert_field_error(error, "user.email")
    assert await all_users(users, tenant) == []


@pytest.mark.parametrize("username", BAD_USERNAMES)
async def test_create_with_invalid_username(users, tenant: str, username: str) -> None:
    error = await fails(create(users, tenant, email="ok@example.com", username=username))

    assert_field_error(error, "user.username")
    assert await all_users(users, tenant) == []


async def test_create_with_too_long_display_name(users, tenant: str) -> None:
    error = await fails(create(users, tenant, username="ok", display_name="d" * 257))

    assert_field_error(error, "user.display_name")


async def test_create_accepts_the_longest_valid_values(users, tenant: str) -> None:
    email = "e" * 64 + "@" + "d" * 185 + ".com"
    assert len(email) == 254

    created = await create(users, tenant, email=email, username="u" * 64, display_name="é" * 256)

    assert (await get(users, tenant, created.id)).display_name == "é" * 256


async def test_create_reports_every_invalid_field_at_once(users, tenant: str) -> None:
    error = await fails(
        create(users, tenant, email="nope", username="-nope", display_name="d" * 300)
    )

    assert error.code == INVALID
    assert error.reason == "INVALID_ARGUMENT"
    assert set(error.violations) == {"user.email", "user.username", "user.display_name"}


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        ({"username": "only-username"}, {"user.email"}),
        ({"email": "only@example.com"}, {"user.username"}),
        ({"display_name": "neither"}, {"user.email", "user.username"}),
    ],
)
async def test_create_without_required_fields(
    users, tenant: str, fields: dict[str, str], missing: set[str]
) -> None:
    error = await fails(
        users.CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(**fields)), metadata=md(tenant)
        )
    )

    assert error.code == INVALID
    assert error.reason == "INVALID_ARGUMENT"
    assert set(error.violations) == missing
    assert await all_users(users, tenant) == []


async def test_create_without_a_user_message(users, tenant: str) -> None:
    error = await fails(users.CreateUser(user_pb2.CreateUserRequest(), metadata=md(tenant)))

    assert error.code == INVALID
    assert set(error.violations) == {"user.email", "user.username"}


@pytest.mark.parametrize(
    ("field", "value"),
    [("email", "not-an-email"), ("username", "bad name"), ("display_name", "d" * 257)],
)
async def test_update_with_invalid_field(users, tenant: str, field: str, value: str) -> None:
    created = await create(users, tenant, username="valid")

    error = await fails(update(users, tenant, user_pb2.User(id=created.id, **{field: value})))

    assert_field_error(error, f"user.{field}")


@pytest.mark.parametrize("field", ["email", "username"])
async def test_update_that_clears_a_required_field(users, tenant: str, field: str) -> None:
    created = await create(users, tenant, username="keep")

    error = await fails(update(users, tenant, user_pb2.User(id=created.id), [field]))

    assert_field_error(error, f"user.{field}")
    assert await get(users, tenant, created.id) == created


@pytest.mark.parametrize(
    ("field", "value"),
    [("display_name", "nul\x00inside"), ("email", "nul\x00@example.com")],
)
async def test_nul_characters_are_invalid_on_every_backend(
    users, tenant: str, field: str, value: str
) -> None:
    # PostgreSQL cannot store NUL in text; SQLite can. The API must not differ.
    error = await fails(create(users, tenant, username="nul", **{field: value}))
    assert_field_error(error, f"user.{field}")

    created = await create(users, tenant, username="nul2")
    error = await fails(update(users, tenant, user_pb2.User(id=created.id, **{field: value})))
    assert_field_error(error, f"user.{field}")
    assert await get(users, tenant, created.id) == created


# Update masks


@pytest.mark.parametrize(
    "path", ["nickname", "create_time", "update_time", "id", "etag", "Email", "user.email", ""]
)
async def test_update_mask_with_a_path_that_cannot_be_updated(
    users, tenant: str, path: str
) -> None:
    created = await create(users, tenant, username="masked")

    error = await fails(
        update(users, tenant, user_pb2.User(id=created.id, display_name="x"), [path])
    )

    assert_field_error(error, "update_mask")
    assert await get(users, tenant, created.id) == created


async def test_update_mask_with_star_among_other_paths(users, tenant: str) -> None:
    created = await create(users, tenant, username="star")

    error = await fails(
        update(users, tenant, user_pb2.User(id=created.id, display_name="x"), ["*", "email"])
    )

    assert_field_error(error, "update_mask")


async def test_update_without_mask_and_nothing_populated(users, tenant: str) -> None:
    created = await create(users, tenant, username="empty")

    error = await fails(update(users, tenant, user_pb2.User(id=created.id, etag=created.etag)))

    assert_field_error(error, "update_mask")
    assert await get(users, tenant, created.id) == created


# Pagination


@pytest.mark.parametrize("page_size", [-1, -(2**31)])
async def test_list_with_negative_page_size(users, tenant: str, page_size: int) -> None:
    error = await fails(list_page(users, tenant, page_size))

    assert_field_error(error, "page_size")


@pytest.mark.parametrize(
    "token", ["garbage", "a.b", "a.b.c", ".", "eyJ9.AAAA", "ä.ö", "%%%%.%%%%", "x" * 5000]
)
async def test_list_with_a_garbage_page_token(users, tenant: str, token: str) -> None:
    error = await fails(list_page(users, tenant, 1, token))

    assert_field_error(error, "page_token", reason="INVALID_PAGE_TOKEN")


async def _a_page_token(users: Stub, tenant: str) -> str:
    for i in range(2):
        await create(users, tenant, username=f"p{i}")
    token = (await list_page(users, tenant, 1)).next_page_token
    assert token
    return token


async def test_list_with_an_edited_page_token(users, tenant: str) -> None:
    token = await _a_page_token(users, tenant)
    body, sig = token.split(".")

    def flip(text: str) -> str:  # the first character: the last may hold only padding bits
        return ("A" if text[0] != "A" else "B") + text[1:]

    for edited in (
        flip(body) + "." + sig,
        body + "." + flip(sig),
        body + "." + sig[:-2],
        token + "x",
    ):
        error = await fails(list_page(users, tenant, 1, edited))
        assert_field_error(error, "page_token", reason="INVALID_PAGE_TOKEN")


async def test_list_with_a_page_token_issued_to_another_tenant(users, tenant: str) -> None:
    token = await _a_page_token(users, tenant)
    other = tenant + "-other"
    await create(users, other, username="theirs")

    error = await fails(list_page(users, other, 1, token))

    assert_field_error(error, "page_token", reason="INVALID_PAGE_TOKEN")
    # The token still works for the tenant it was issued to.
    assert (await list_page(users, tenant, 1, token)).users


# Uniqueness


@pytest.mark.parametrize(
    ("field", "first", "second"),
    [
        ("email", "Ann@x.com", "ann@x.com"),
        ("email", "ann@x.com", "ANN@X.COM"),
        ("username", "Ann", "ann"),
        ("username", "ann", "ann"),
    ],
)
async def test_create_duplicate_is_already_exists(
    users, tenant: str, field: str, first: str, second: str
) -> None:
    other = "username" if field == "email" else "email"
    distinct = {"username": ("one", "two"), "email": ("one@example.com", "two@example.com")}
    original = await create(users, tenant, **{field: first, other: distinct[other][0]})

    error = await fails(create(users, tenant, **{field: second, other: distinct[other][1]}))

    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "RESOURCE_ALREADY_EXISTS"
    assert error.metadata["field"] == field
    assert error.metadata["resource_type"] == "user"
    assert error.violations == {}
    assert await all_users(users, tenant) == [original]


@pytest.mark.parametrize("field", ["email", "username"])
async def test_update_to_a_taken_value_is_already_exists(users, tenant: str, field: str) -> None:
    taken = await create(users, tenant, email="taken@x.com", username="taken")
    mover = await create(users, tenant, email="mover@x.com", username="mover")

    error = await fails(
        update(
            users,
            tenant,
            user_pb2.User(
                id=mover.id, display_name="moved", **{field: getattr(taken, field).upper()}
            ),
        )
    )

    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "RESOURCE_ALREADY_EXISTS"
    assert error.metadata["field"] == field
    # Nothing of the failed update was applied, not even the valid display_name.
    assert await get(users, tenant, mover.id) == mover
    assert await get(users, tenant, taken.id) == taken


async def test_same_email_and_username_in_two_tenants_is_allowed(users, tenant: str) -> None:
    other = tenant + "-other"

    mine = await create(users, tenant, email="Same@x.com", username="same")
    theirs = await create(users, other, email="same@x.com", username="SAME")

    assert mine.id != theirs.id
    assert await all_users(users, tenant) == [mine]
    assert await all_users(users, other) == [theirs]


# Optimistic concurrency


async def test_update_with_a_stale_etag_is_aborted(users, tenant: str) -> None:
    created = await create(users, tenant, username="stale")
    current = await update(users, tenant, user_pb2.User(id=created.id, display_name="new"))

    error = await fails(
        update(users, tenant, user_pb2.User(id=created.id, etag=created.etag, display_name="lost"))
    )

    assert error.code == grpc.StatusCode.ABORTED
    assert error.reason == "ETAG_MISMATCH"
    assert error.metadata["id"] == created.id
    assert await get(users, tenant, created.id) == current


async def test_delete_with_a_stale_etag_is_aborted(users, tenant: str) -> None:
    created = await create(users, tenant, username="stale")
    current = await update(users, tenant, user_pb2.User(id=created.id, display_name="new"))

    error = await fails(
        users.DeleteUser(
            user_pb2.DeleteUserRequest(id=created.id, etag=created.etag), metadata=md(tenant)
        )
    )

    assert error.code == grpc.StatusCode.ABORTED
    assert error.reason == "ETAG_MISMATCH"
    assert await get(users, tenant, created.id) == current


async def test_a_made_up_etag_is_aborted(users, tenant: str) -> None:
    created = await create(users, tenant, username="made-up")

    for etag in ("0", str(int(created.etag) + 1), "2147483647"):
        error = await fails(
            update(users, tenant, user_pb2.User(id=created.id, etag=etag, display_name="x"))
        )
        assert error.code == grpc.StatusCode.ABORTED
        assert error.reason == "ETAG_MISMATCH"
    assert await get(users, tenant, created.id) == created


async def test_a_stale_etag_on_a_deleted_user_says_it_is_deleted(users, tenant: str) -> None:
    created = await create(users, tenant, username="gone")
    await users.DeleteUser(user_pb2.DeleteUserRequest(id=created.id), metadata=md(tenant))

    error = await fails(
        update(users, tenant, user_pb2.User(id=created.id, etag=created.etag, display_name="x"))
    )

    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "RESOURCE_DELETED"
    assert error.metadata["id"] == created.id


async def test_a_purged_user_is_not_found(users, tenant: str) -> None:
    created = await create(users, tenant, username="purged")
    await users.DeleteUser(
        user_pb2.DeleteUserRequest(id=created.id, force=True), metadata=md(tenant)
    )

    error = await fails(
        update(users, tenant, user_pb2.User(id=created.id, etag=created.etag, display_name="x"))
    )

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "RESOURCE_NOT_FOUND"


# Tenant isolation


async def test_another_tenants_user_cannot_be_read_changed_or_deleted(users, tenant: str) -> None:
    victim = await create(users, tenant, username="victim", display_name="Victim")
    intruder = tenant + "-intruder"
    await create(users, intruder, username="intruder")  # the intruder's tenant is not empty

    attempts = {
        "get": get(users, intruder, victim.id),
        "update": update(
            users, intruder, user_pb2.User(id=victim.id, display_name="pwned", is_active=False)
        ),
        "update with etag": update(
            users, intruder, user_pb2.User(id=victim.id, etag=victim.etag, display_name="pwned")
        ),
        "update with star": update(
            users,
            intruder,
            user_pb2.User(id=victim.id, email="p@x.com", username="pwned"),
            ["*"],
        ),
        "delete": users.DeleteUser(user_pb2.DeleteUserRequest(id=victim.id), metadata=md(intruder)),
        "delete with etag": users.DeleteUser(
            user_pb2.DeleteUserRequest(id=victim.id, etag=victim.etag), metadata=md(intruder)
        ),
    }
    for name, attempt in attempts.items():
        error = await fails(attempt)
        assert error.code == grpc.StatusCode.NOT_FOUND, name
        assert error.reason == "RESOURCE_NOT_FOUND", name
        assert error.metadata["id"] == victim.id, name

    assert await get(users, tenant, victim.id) == victim
    assert victim.id not in [u.id for u in await all_users(users, intruder)]


async def test_tenant_ids_differing_only_in_case_are_distinct(users, tenant: str) -> None:
    upper = tenant.upper()
    created = await create(users, tenant, username="cased")

    error = await fails(get(users, upper, created.id))

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert await all_users(users, upper) == []


# Request ids


async def test_request_id_is_echoed_in_error_info(users, tenant: str) -> None:
    error = await fails(
        users.GetUser(
            user_pb2.GetUserRequest(id=SOME_ID), metadata=md(tenant, x_request_id="abc-123")
        )
    )

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.metadata["request_id"] == "abc-123"


async def test_request_id_is_echoed_on_validation_errors(users) -> None:
    error = await fails(
        users.GetUser(user_pb2.GetUserRequest(id=SOME_ID), metadata=md(None, x_request_id="r.1:2"))
    )

    assert error.reason == "INVALID_TENANT"
    assert error.metadata["request_id"] == "r.1:2"


async def test_a_request_id_is_made_up_when_missing_or_malformed(users, tenant: str) -> None:
    seen = set()
    for metadata in (md(tenant), md(tenant, x_request_id="has space"), md(tenant, x_request_id="")):
        error = await fails(users.GetUser(user_pb2.GetUserRequest(id=SOME_ID), metadata=metadata))
        request_id = error.metadata["request_id"]
        assert request_id
        assert request_id != "has space"
        seen.add(request_id)
    assert len(seen) == 3


# A failed call leaves the database as it was


async def test_failed_creates_leave_no_row(users, tenant: str) -> None:
    existing = await create(users, tenant, email="here@x.com", username="here")
    before = await all_users(users, tenant)

    for fields in (
        {"email": "HERE@x.com", "username": "new"},  # unique violation on email
        {"email": "new@x.com", "username": "HERE"},  # unique violation on username
        {"email": "bad", "username": "new"},  # validation
        {"email": "new@x.com", "username": "new", "display_name": "d" * 257},
    ):
        await fails(create(users, tenant, **fields))

    assert await all_users(users, tenant) == before == [existing]
    # The failures did not poison a pooled connection or leave a lock behind.
    fresh = await create(users, tenant, email="new@x.com", username="new")
    assert await all_users(users, tenant) == [existing, fresh]


async def test_failed_updates_leave_the_row_and_its_etag_unchanged(users, tenant: str) -> None:
    other = await create(users, tenant, email="other@x.com", username="other")
    target = await create(users, tenant, email="target@x.com", username="target", display_name="T")
    stale = target.etag
    target = await update(users, tenant, user_pb2.User(id=target.id, display_name="T2"))

    failing = [
        (user_pb2.User(id=target.id, display_name="x", email="bad"), None),
        (user_pb2.User(id=target.id, display_name="x", email="OTHER@x.com"), None),
        (user_pb2.User(id=target.id, display_name="x", username="Other"), None),
        (user_pb2.User(id=target.id, display_name="x", etag=stale), None),
        (user_pb2.User(id=target.id, display_name="x", etag="nope"), None),
        (user_pb2.User(id=target.id, display_name="x"), ["display_name", "create_time"]),
        (user_pb2.User(id=target.id, display_name="x"), ["*"]),  # * clears required email
    ]
    for user, paths in failing:
        await fails(update(users, tenant, user, paths))
        assert await get(users, tenant, target.id) == target, (user, paths)

    assert await all_users(users, tenant) == [other, target]
    ok = await update(
        users, tenant, user_pb2.User(id=target.id, etag=target.etag, display_name="y")
    )
    assert ok.display_name == "y"


async def test_failed_deletes_leave_the_row(users, tenant: str) -> None:
    target = await create(users, tenant, username="target")
    stale = target.etag
    target = await update(users, tenant, user_pb2.User(id=target.id, display_name="T2"))

    for request in (
        user_pb2.DeleteUserRequest(id=target.id, etag=stale),
        user_pb2.DeleteUserRequest(id=target.id, etag="x"),
    ):
        await fails(users.DeleteUser(request, metadata=md(tenant)))
    await fails(
        users.DeleteUser(user_pb2.DeleteUserRequest(id=target.id), metadata=md(tenant + "x"))
    )

    assert await all_users(users, tenant) == [target]


async def test_validation_errors_come_before_lookups(users, tenant: str) -> None:
    # A malformed request is INVALID_ARGUMENT even for an id that does not exist,
    # so a client learns nothing about other rows from the kind of error.
    error = await fails(
        update(users, tenant, user_pb2.User(id=SOME_ID, email="bad", display_name="x"))
    )

    assert_field_error(error, "user.email")
    assert [list(p.users) for p in await walk(users, tenant, 10)] == [[]]
