"""Counts through the real server: CountUsers, ListUsers.total_size and count modes
(NONE, EXACT, ESTIMATED), with filters and show_deleted, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from repogate.v1 import query_pb2, user_pb2
from repositories.database import Database
from tests.e2e.support import StartRepogate, Stub, create, fails
from tests.integration.support import BASE_TIME, insert_rows, raw_row
from tests.rpc import md

pytestmark = pytest.mark.e2e

NONE = query_pb2.COUNT_MODE_NONE
EXACT = query_pb2.COUNT_MODE_EXACT
ESTIMATED = query_pb2.COUNT_MODE_ESTIMATED
INVALID = grpc.StatusCode.INVALID_ARGUMENT

# (username, is_active, soft-deleted): every combination, in uneven numbers, so
# that a count which ignores the filter or show_deleted gets another number.
PEOPLE = [
    ("ada", True, False),
    ("ben", True, False),
    ("cy", True, False),
    ("dee", False, False),
    ("eve", False, False),
    ("fay", True, True),
    ("gus", False, True),
    ("hal", False, True),
    ("ivy", False, True),
]


async def seed(users: Stub, tenant: str) -> dict[str, tuple[bool, bool]]:
    """Creates PEOPLE (deleting the deleted ones); returns id -> (is_active, deleted)."""
    made = {}
    for name, active, deleted in PEOPLE:
        user = await create(users, tenant, username=name, is_active=active)
        if deleted:
            await users.DeleteUser(user_pb2.DeleteUserRequest(id=user.id), metadata=md(tenant))
        made[user.id] = (active, deleted)
    # A neighbour with the same users must never be counted.
    for name, active, _ in PEOPLE:
        await create(users, tenant + "-other", username=name, is_active=active)
    return made


async def count(users: Stub, tenant: str, **fields: Any) -> user_pb2.CountUsersResponse:
    return await users.CountUsers(user_pb2.CountUsersRequest(**fields), metadata=md(tenant))


async def pages(
    users: Stub, tenant: str, page_size: int, **fields: Any
) -> list[user_pb2.ListUsersResponse]:
    """Every page of one query, first to last."""
    found = [
        await users.ListUsers(
            user_pb2.ListUsersRequest(page_size=page_size, **fields), metadata=md(tenant)
        )
    ]
    while found[-1].next_page_token:
        assert len(found) < 100, "pagination does not terminate"
        found.append(
            await users.ListUsers(
                user_pb2.ListUsersRequest(
                    page_size=page_size, page_token=found[-1].next_page_token, **fields
                ),
                metadata=md(tenant),
            )
        )
    return found


# ------------------------------------------------------------ CountUsers


QUERIES = [
    ("", False, lambda active, deleted: not deleted),
    ("", True, lambda active, deleted: True),
    ("is_active = true", False, lambda active, deleted: active and not deleted),
    ("is_active = true", True, lambda active, deleted: active),
    ("is_active = false", True, lambda active, deleted: not active),
    ('username = "zzz"', True, lambda active, deleted: False),
    ("delete_time != null", True, lambda active, deleted: deleted),
    ("delete_time != null", False, lambda active, deleted: False),
    (
        "is_active = true AND delete_time = null",
        True,
        lambda active, deleted: active and not deleted,
    ),
]


@pytest.mark.parametrize(("filter_", "show_deleted", "holds"), QUERIES)
async def test_count_is_exact_by_default_and_matches_filter_and_show_deleted(
    users: Stub, tenant: str, filter_: str, show_deleted: bool, holds: Any
) -> None:
    made = await seed(users, tenant)
    expected = sum(1 for active, deleted in made.values() if holds(active, deleted))

    reply = await count(users, tenant, filter=filter_, show_deleted=show_deleted)

    assert reply.total_size == expected
    assert reply.total_size_exact is True
    explicit = await count(
        users, tenant, filter=filter_, show_deleted=show_deleted, count_mode=EXACT
    )
    assert (explicit.total_size, explicit.total_size_exact) == (expected, True)
    # The count is of the very users ListUsers returns for the same query.
    listed = await pages(users, tenant, 4, filter=filter_, show_deleted=show_deleted)
    assert sum(len(page.users) for page in listed) == expected


async def test_count_of_a_tenant_without_users_is_zero(users: Stub, tenant: str) -> None:
    reply = await count(users, tenant, show_deleted=True)
    assert (reply.total_size, reply.total_size_exact) == (0, True)


async def test_count_with_none_is_invalid_argument(users: Stub, tenant: str) -> None:
    error = await fails(count(users, tenant, count_mode=NONE))
    assert error.code == INVALID
    assert list(error.violations) == ["count_mode"]


@pytest.mark.parametrize("mode", [99, 4, -1])
@pytest.mark.parametrize("rpc", ["CountUsers", "ListUsers"])
async def test_unknown_count_mode_is_invalid_argument(
    users: Stub, tenant: str, rpc: str, mode: int
) -> None:
    # proto3 enums are open: a newer client may send a value this server never heard of.
    request_cls = getattr(user_pb2, f"{rpc}Request")
    request = request_cls(count_mode=mode)
    assert request.count_mode == mode

    error = await fails(getattr(users, rpc)(request, metadata=md(tenant)))

    assert error.code == INVALID
    assert list(error.violations) == ["count_mode"]


@pytest.mark.parametrize(
    "filter_",
    [
        'nope = "x"',
        "is_active = ",
        'is_active = "yes"',
        "is_active > true",
        'id = "not-a-uuid"',
        'id < "0b1c6f0e-8f4f-4c59-9d7e-3c2b8f7a6e51"',
        'create_time > "yesterday"',
        'create_time > "9999-12-31T23:59:59-01:00"',
        'create_time < "0001-01-01T00:00:00+01:00"',
        "username = 5",
        'username < "a*"',
        'username : "a*b"',
        "username IN (null)",
        "username IN (" + ", ".join(['"x"'] * 101) + ")",
        '"unterminated',
        "NOT " * 17 + "is_active = true",
        'email = "' + "x" * 2100 + '"',
        'display_name = "\\q"',
    ],
)
@pytest.mark.parametrize("mode", [EXACT, ESTIMATED])
async def test_invalid_count_filter_is_invalid_filter_not_internal(
    users: Stub, tenant: str, filter_: str, mode: int
) -> None:
    await create(users, tenant, username="someone")

    error = await fails(count(users, tenant, filter=filter_, count_mode=mode))

    assert error.code == INVALID, (error.code, error.message)
    assert error.reason == "INVALID_FILTER"
    assert list(error.violations) == ["filter"]


@pytest.mark.parametrize(
    ("filter_", "matches"),
    [
        # Valid filters at the edges of what each database stores: a number, not an error.
        ('create_time > "0001-01-01T00:00:00Z"', True),
        ('create_time < "9999-12-31T00:00:00Z"', True),
        ('update_time <= "1970-01-01T00:00:00Z"', False),
        ('username = "' + "u" * 500 + '"', False),
        ('display_name = "Some\\tOne"', False),
        ("display_name = null", False),
        ("display_name != null", True),
        ('email =~ "SOMEONE@*"', True),
    ],
)
async def test_edge_filters_count_instead_of_failing(
    users: Stub, tenant: str, filter_: str, matches: bool
) -> None:
    await create(users, tenant, username="someone", display_name="Some One")

    reply = await count(users, tenant, filter=filter_)

    assert (reply.total_size, reply.total_size_exact) == (int(matches), True)


# ------------------------------------------------------------ ListUsers.total_size


@pytest.mark.parametrize(
    ("filter_", "show_deleted"),
    [("", False), ("", True), ("is_active = false", False), ("is_active = false", True)],
)
async def test_list_with_exact_count_gives_the_total_on_every_page(
    users: Stub, tenant: str, filter_: str, show_deleted: bool
) -> None:
    await seed(users, tenant)

    walked = await pages(
        users, tenant, 2, filter=filter_, show_deleted=show_deleted, count_mode=EXACT
    )

    listed = [user.id for page in walked for user in page.users]
    assert len(listed) == len(set(listed))
    assert len(walked) >= 2 or len(listed) <= 2
    for page in walked:
        assert page.HasField("total_size")
        assert page.total_size == len(listed)
        assert page.total_size_exact is True


async def test_list_total_ignores_page_size_and_skip(users: Stub, tenant: str) -> None:
    made = await seed(users, tenant)
    live = sum(1 for _, deleted in made.values() if not deleted)

    page = await users.ListUsers(
        user_pb2.ListUsersRequest(page_size=1, skip=2, count_mode=EXACT), metadata=md(tenant)
    )

    assert len(page.users) == 1
    assert page.HasField("total_size")
    assert page.total_size == live


@pytest.mark.parametrize("mode", [None, NONE])
async def test_list_without_count_leaves_total_size_unset(
    users: Stub, tenant: str, mode: int | None
) -> None:
    await seed(users, tenant)
    fields = {} if mode is None else {"count_mode": mode}

    for page in await pages(users, tenant, 3, show_deleted=True, **fields):
        assert page.users
        assert not page.HasField("total_size")
        assert page.total_size_exact is False


async def test_list_of_an_empty_tenant_with_exact_count_says_zero(users: Stub, tenant: str) -> None:
    page = await users.ListUsers(user_pb2.ListUsersRequest(count_mode=EXACT), metadata=md(tenant))
    assert list(page.users) == []
    # Zero must still be *set*: it is an answer, not the absence of one.
    assert page.HasField("total_size")
    assert (page.total_size, page.total_size_exact) == (0, True)


# ------------------------------------------------------------ ESTIMATED


async def test_estimated_count_of_a_small_tenant_is_exact(users: Stub, tenant: str) -> None:
    # SQLite always counts; PostgreSQL counts while the planner expects fewer rows
    # than the default threshold (10,000).
    made = await seed(users, tenant)
    live = sum(1 for _, deleted in made.values() if not deleted)
    active = sum(1 for active, deleted in made.values() if active and not deleted)

    reply = await count(users, tenant, count_mode=ESTIMATED)
    assert (reply.total_size, reply.total_size_exact) == (live, True)

    reply = await count(users, tenant, count_mode=ESTIMATED, show_deleted=True)
    assert (reply.total_size, reply.total_size_exact) == (len(made), True)

    walked = await pages(users, tenant, 2, filter="is_active = true", count_mode=ESTIMATED)
    for page in walked:
        assert page.HasField("total_size")
        assert (page.total_size, page.total_size_exact) == (active, True)


SEEDED = 2000


async def test_estimated_count_on_postgresql_is_the_planners_estimate(
    backend: str,
    database: Database,
    database_url: str,
    start_repogate: StartRepogate,
    users: Stub,
    tenant: str,
) -> None:
    if backend != "postgresql":
        pytest.skip("estimates come from the PostgreSQL planner; SQLite always counts")
    rows = [raw_row(f"e{i:04}", BASE_TIME + timedelta(seconds=i)) for i in range(SEEDED)]
    for start in range(0, SEEDED, 500):
        await insert_rows(database, tenant, rows[start : start + 500])
    async with database.engine.connect() as conn:
        await conn.execute(text("ANALYZE users"))
        await conn.commit()
    eager = await start_repogate(database_url=database_url, count_estimate_threshold=0)
    stub = eager.users

    # An estimate is a guess: only its flag and its order of magnitude are promised.
    reply = await count(stub, tenant, count_mode=ESTIMATED)
    assert reply.total_size_exact is False
    assert SEEDED / 100 <= reply.total_size <= SEEDED * 100

    # With a filter, whose values reach EXPLAIN as bound parameters. e1000..e1999
    matching = 1000
    reply = await count(stub, tenant, filter='username = "e1*"', count_mode=ESTIMATED)
    assert reply.total_size_exact is False
    assert matching / 100 <= reply.total_size <= matching * 100

    page = await stub.ListUsers(
        user_pb2.ListUsersRequest(page_size=5, count_mode=ESTIMATED), metadata=md(tenant)
    )
    assert len(page.users) == 5
    assert page.HasField("total_size")
    assert page.total_size_exact is False
    assert SEEDED / 100 <= page.total_size <= SEEDED * 100

    # EXACT is still exact on that server...
    reply = await count(stub, tenant, count_mode=EXACT)
    assert (reply.total_size, reply.total_size_exact) == (SEEDED, True)
    # ...and the default threshold (10,000) keeps this tenant's estimate exact.
    reply = await count(users, tenant, count_mode=ESTIMATED)
    assert (reply.total_size, reply.total_size_exact) == (SEEDED, True)
