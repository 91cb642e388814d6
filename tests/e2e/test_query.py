"""ListUsers with filter, order_by and skip, and CountUsers, through a real server."""

from __future__ import annotations

import pytest

from repogate.v1 import user_pb2
from tests.e2e.support import Stub, create, fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

NAMES = ["Ann", "Annette", "bob", "Cara", "ann", "Dan", "Anna"]


async def seed(users: Stub, tenant: str) -> list[user_pb2.User]:
    made = []
    for i, name in enumerate(NAMES):
        made.append(
            await create(users, tenant, username=f"u{i}", display_name=name, is_active=i % 2 == 0)
        )
    return made


async def walk(users: Stub, tenant: str, page_size: int, **query: str) -> list[user_pb2.User]:
    seen: list[user_pb2.User] = []
    token = ""
    while True:
        page = await users.ListUsers(
            user_pb2.ListUsersRequest(page_size=page_size, page_token=token, **query),
            metadata=md(tenant),
        )
        seen.extend(page.users)
        token = page.next_page_token
        if not token:
            return seen
        assert len(seen) < 1000


async def count(users: Stub, tenant: str, filter_: str = "") -> int:
    reply = await users.CountUsers(user_pb2.CountUsersRequest(filter=filter_), metadata=md(tenant))
    return reply.total_size


@pytest.mark.parametrize("page_size", [1, 2, 3, 50])
async def test_order_by_display_name_desc_walks_in_order(
    users: Stub, tenant: str, page_size: int
) -> None:
    made = await seed(users, tenant)
    got = await walk(users, tenant, page_size, order_by="display_name desc, create_time")
    position = {u.id: i for i, u in enumerate(made)}
    expected = sorted(made, key=lambda u: (u.display_name, -position[u.id]), reverse=True)
    assert [u.id for u in got] == [u.id for u in expected]


async def test_ties_are_broken_by_id_across_pages(users: Stub, tenant: str) -> None:
    made = [await create(users, tenant, username=f"same{i}", display_name="Same") for i in range(7)]
    got = await walk(users, tenant, 2, order_by="display_name")
    assert [u.id for u in got] == sorted(u.id for u in made)


async def test_filter_with_wildcard_and_time(users: Stub, tenant: str) -> None:
    made = await seed(users, tenant)
    since = made[2].create_time.ToJsonString()
    text = f'display_name = "Ann*" AND create_time > "{since}"'
    got = await walk(users, tenant, 2, filter=text, order_by="display_name desc")
    expected = [u for u in made[3:] if u.display_name.startswith("Ann")]
    expected.sort(key=lambda u: u.display_name, reverse=True)
    assert [u.id for u in got] == [u.id for u in expected]
    assert await count(users, tenant, text) == len(expected)


async def test_count_and_filter_on_bool(users: Stub, tenant: str) -> None:
    made = await seed(users, tenant)
    active = [u for u in made if u.is_active]
    assert await count(users, tenant) == len(made)
    assert await count(users, tenant, "is_active = true") == len(active)
    got = await walk(users, tenant, 50, filter="is_active = false")
    assert {u.id for u in got} == {u.id for u in made} - {u.id for u in active}


async def test_filters_never_cross_tenants(users: Stub, tenant: str) -> None:
    await seed(users, tenant)
    other = tenant + "-other"
    assert await count(users, other, 'display_name = "Ann*" OR display_name != "x"') == 0
    assert await walk(users, other, 10, filter='username = "u*"') == []


async def test_skip_offsets_after_the_position(users: Stub, tenant: str) -> None:
    made = await seed(users, tenant)
    page = await users.ListUsers(
        user_pb2.ListUsersRequest(page_size=2, skip=3), metadata=md(tenant)
    )
    assert [u.id for u in page.users] == [u.id for u in made[3:5]]
    assert page.next_page_token
    rest = await users.ListUsers(
        user_pb2.ListUsersRequest(page_size=50, page_token=page.next_page_token),
        metadata=md(tenant),
    )
    assert [u.id for u in rest.users] == [u.id for u in made[5:]]


@pytest.mark.parametrize(
    "changed",
    [{"filter": 'username = "u1"'}, {"order_by": "email"}, {"filter": "", "order_by": ""}],
)
async def test_a_token_only_works_for_its_own_query(
    users: Stub, tenant: str, changed: dict[str, str]
) -> None:
    await seed(users, tenant)
    query = {"filter": 'display_name != "zzz"', "order_by": "username desc"}
    first = await users.ListUsers(
        user_pb2.ListUsersRequest(page_size=2, **query), metadata=md(tenant)
    )
    replay = user_pb2.ListUsersRequest(
        page_size=2, page_token=first.next_page_token, **{**query, **changed}
    )
    error = await fails(users.ListUsers(replay, metadata=md(tenant)))
    assert error.reason == "INVALID_PAGE_TOKEN"
    assert "page_token" in error.violations


@pytest.mark.parametrize(
    ("request_", "field", "reason"),
    [
        (user_pb2.ListUsersRequest(filter='nope = "x"'), "filter", "INVALID_FILTER"),
        (user_pb2.ListUsersRequest(filter="is_active = "), "filter", "INVALID_FILTER"),
        (
            user_pb2.ListUsersRequest(filter="(" * 40 + "is_active = true" + ")" * 40),
            "filter",
            "INVALID_FILTER",
        ),
        (user_pb2.ListUsersRequest(order_by="is_active"), "order_by", "INVALID_ORDER_BY"),
        (user_pb2.ListUsersRequest(skip=-1), "skip", "INVALID_ARGUMENT"),
    ],
)
async def test_bad_queries_are_invalid_argument(
    users: Stub, tenant: str, request_: user_pb2.ListUsersRequest, field: str, reason: str
) -> None:
    error = await fails(users.ListUsers(request_, metadata=md(tenant)))
    assert error.code.name == "INVALID_ARGUMENT"
    assert error.reason == reason
    assert field in error.violations


async def test_bad_count_filter_is_invalid_argument(users: Stub, tenant: str) -> None:
    error = await fails(
        users.CountUsers(user_pb2.CountUsersRequest(filter="email > 3"), metadata=md(tenant))
    )
    assert error.reason == "INVALID_FILTER"
    assert "filter" in error.violations
