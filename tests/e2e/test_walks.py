"""Walking ListUsers page by page through the real server: any page size and order
gives every user once in the order asked, concurrent inserts never duplicate a
user, page tokens only work for the query they came from; and concurrent updates
with the same etag let exactly one through."""

from __future__ import annotations

import asyncio
import random
import string
import uuid
from datetime import timedelta
from typing import Any

import grpc
import pytest
from grpc import aio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from repogate.v1 import query_pb2, user_pb2, user_pb2_grpc
from repositories.database import Database
from repositories.users import USER
from tests.conftest import Running
from tests.e2e.support import Stub, create, fails, get, update
from tests.integration.support import BASE_TIME, insert_rows
from tests.rpc import details, md

pytestmark = pytest.mark.e2e

SORTABLE = sorted(USER.sortable)
SEEDED = 60
DELETED = 7
# Few words, many users: display_name ties that only the id can break.
WORDS = ("ash", "birch", "cedar", "elm", "fir", "oak", "yew")


def _letters(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(size))


def seed_rows(rng: random.Random) -> list[dict[str, Any]]:
    """Users with ties in every sortable column but the unique ones.

    Strings are lowercase ASCII, and the unique ones differ within a prefix of one
    fixed length, so that any database collation orders them as Python does:
    "ab@x" vs "abc@x" sorts differently under a locale that ignores punctuation.
    """
    names = set()
    while len(names) < SEEDED:
        names.add(_letters(rng, 8))
    rows = []
    for i, name in enumerate(sorted(names)):
        rows.append(
            {
                "id": uuid.uuid4(),
                "email": f"{_letters(rng, 6)}{i:02}@example.com",
                "username": name,
                "display_name": rng.choice(WORDS),
                "is_active": True,
                "version": 1,
                "create_time": BASE_TIME + timedelta(minutes=i // 4),
                "update_time": BASE_TIME + timedelta(seconds=rng.randrange(12)),
                "delete_time": BASE_TIME + timedelta(days=1) if i % 9 == 4 else None,
                # Unset on a third of the users: they sort after every time.
                "last_login_time": None if i % 3 == 0 else BASE_TIME + timedelta(hours=i % 5),
            }
        )
    rng.shuffle(rows)  # insertion order must not be what the walk relies on
    return rows


_seeded: dict[str, list[dict[str, Any]]] = {}


async def seeded(database: Database, tenant: str) -> list[dict[str, Any]]:
    """The tenant's users, inserted on first use (hypothesis reuses the tenant)."""
    if tenant not in _seeded:
        rows = seed_rows(random.Random(tenant))
        assert sum(row["delete_time"] is not None for row in rows) == DELETED
        await insert_rows(database, tenant, rows)
        _seeded[tenant] = rows
    return _seeded[tenant]


def expected_order(rows: list[dict[str, Any]], keys: list[tuple[str, bool]]) -> list[str]:
    """The ids of `rows` sorted by `keys` (name, descending), ties broken by id; a
    missing value (None) after every other, so first when descending."""
    if all(name != "id" for name, _ in keys):
        keys = [*keys, ("id", False)]
    ordered = sorted(rows, key=lambda row: str(row["id"]))
    for name, descending in reversed(keys):
        # Stable sorts from the last key to the first: a multi-key sort. UUIDs
        # compare as their lowercase hex text, as both databases compare them.
        ordered.sort(
            key=lambda row, n=name: str(row[n]) if n == "id" else (row[n] is None, row[n]),
            reverse=descending,
        )
    return [str(row["id"]) for row in ordered]


async def walk_ids(
    users: Stub, tenant: str, page_size: int, **query: Any
) -> tuple[list[str], list[int]]:
    """The ids of every page of one query, and the size of each page."""
    ids: list[str] = []
    sizes: list[int] = []
    token = ""
    while True:
        page = await users.ListUsers(
            user_pb2.ListUsersRequest(page_size=page_size, page_token=token, **query),
            metadata=md(tenant),
        )
        ids += [user.id for user in page.users]
        sizes.append(len(page.users))
        token = page.next_page_token
        if not token:
            return ids, sizes
        assert len(sizes) <= 2 * SEEDED, "pagination does not terminate"


order_terms = st.lists(
    st.tuples(st.sampled_from(SORTABLE), st.sampled_from(["", " asc", " desc", " DESC"])),
    min_size=1,
    max_size=2,
    unique_by=lambda term: term[0],
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(page_size=st.integers(1, 40), terms=order_terms, show_deleted=st.booleans())
# A nullable key, across the boundary between times and NULLs both ways.
@example(page_size=3, terms=[("last_login_time", "")], show_deleted=False)
@example(page_size=2, terms=[("last_login_time", " desc"), ("display_name", "")], show_deleted=True)
async def test_any_page_size_and_order_walks_every_user_once_in_order(
    users: Stub,
    database: Database,
    tenant: str,
    page_size: int,
    terms: list[tuple[str, str]],
    show_deleted: bool,
) -> None:
    rows = await seeded(database, tenant)
    shown = [row for row in rows if show_deleted or row["delete_time"] is None]
    order_by = ", ".join(name + direction for name, direction in terms)
    keys = [(name, direction.strip().lower() == "desc") for name, direction in terms]

    ids, sizes = await walk_ids(
        users, tenant, page_size, order_by=order_by, show_deleted=show_deleted
    )

    assert ids == expected_order(shown, keys), order_by
    assert len(shown) == SEEDED - (0 if show_deleted else DELETED)
    # Full pages, then the rest; never an empty page after a token.
    pages = -(-len(shown) // page_size)
    assert sizes == [page_size] * (pages - 1) + [len(shown) - page_size * (pages - 1)]


@pytest.mark.parametrize(
    "order_by", ["", "username", "display_name desc", "email desc, create_time", "id desc"]
)
async def test_walk_during_concurrent_inserts_sees_each_earlier_user_once(
    users: Stub, tenant: str, order_by: str
) -> None:
    rng = random.Random(order_by)
    before = await users.BatchCreateUsers(
        user_pb2.BatchCreateUsersRequest(
            requests=[
                user_pb2.CreateUserRequest(
                    user=user_pb2.User(
                        email=f"b{i:02}{_letters(rng, 4)}@example.com",
                        username=f"{_letters(rng, 6)}{i:02}",
                        display_name=rng.choice(WORDS),
                    )
                )
                for i in range(40)
            ]
        ),
        metadata=md(tenant),
    )
    existing = {user.id for user in before.users}
    walking = asyncio.Event()
    one_in = asyncio.Event()
    done = asyncio.Event()
    inserted: set[str] = set()
    during: list[str] = []

    async def insert() -> None:
        await walking.wait()
        i = 0
        while not done.is_set() and i < 300:
            # Random names land before and after the walk's position alike.
            user = await create(
                users,
                tenant,
                username=f"{_letters(rng, 6)}n{i}",
                email=f"n{i}{_letters(rng, 4)}@example.com",
                display_name=rng.choice(WORDS),
            )
            inserted.add(user.id)
            if not done.is_set():
                during.append(user.id)
            one_in.set()
            i += 1

    async def walk() -> list[str]:
        ids: list[str] = []
        token = ""
        walking.set()
        while True:
            page = await users.ListUsers(
                user_pb2.ListUsersRequest(page_size=3, page_token=token, order_by=order_by),
                metadata=md(tenant),
            )
            ids += [user.id for user in page.users]
            token = page.next_page_token
            # The rest of the walk overlaps an insert at least, however fast pages come.
            await asyncio.wait_for(one_in.wait(), 30)
            if not token:
                done.set()
                return ids
            assert len(ids) < 1000, "pagination does not terminate"
            await asyncio.sleep(0)

    ids, _ = await asyncio.gather(walk(), insert())

    assert during, "no insert overlapped the walk; the test proved nothing"
    assert len(ids) == len(set(ids)), "a user was listed twice"
    assert existing <= set(ids), "a user that existed before the walk was skipped"
    assert set(ids) <= existing | inserted


# ------------------------------------------------------------ page tokens


async def first_page(users: Stub, tenant: str, **query: Any) -> user_pb2.ListUsersResponse:
    for i in range(5):
        await create(users, tenant, username=f"tok{i}")
    page = await users.ListUsers(
        user_pb2.ListUsersRequest(page_size=2, **query), metadata=md(tenant)
    )
    assert page.next_page_token
    return page


def _flip(token: str, at: int) -> str:
    """`token` with the character at `at` swapped for another base64url one."""
    char = "B" if token[at] == "A" else "A"
    return token[:at] + char + token[at + 1 :]


TAMPERINGS = {
    "first char": lambda t: _flip(t, 0),
    "middle of payload": lambda t: _flip(t, t.index(".") // 2),
    "last payload char before dot": lambda t: _flip(t, t.index(".") - 2),
    # Not the very last character: its low bits may be base64 padding.
    "middle of signature": lambda t: _flip(t, len(t) - 8),
    "signature dropped": lambda t: t.split(".")[0],
    "truncated": lambda t: t[:-4],
    "extended": lambda t: t + "AAAA",
    "dot doubled": lambda t: t.replace(".", ".."),
    "payload of another token": lambda t: "W10." + t.split(".")[1],
}


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
async def test_a_tampered_token_is_invalid_page_token(
    users: Stub, tenant: str, tamper: Any
) -> None:
    page = await first_page(users, tenant)
    token = tamper(page.next_page_token)
    assert token != page.next_page_token

    error = await fails(
        users.ListUsers(
            user_pb2.ListUsersRequest(page_size=2, page_token=token), metadata=md(tenant)
        )
    )

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_PAGE_TOKEN"
    assert list(error.violations) == ["page_token"]


# filter and order_by changes are covered by test_query.py.
REPLAYS = {
    "another tenant": ({}, {}, True),
    "show_deleted turned on": ({}, {"show_deleted": True}, False),
    "show_deleted turned off": ({"show_deleted": True}, {"show_deleted": False}, False),
    "filter added": ({}, {"filter": 'username = "tok*"'}, False),
    "order_by spelled out": ({}, {"order_by": "create_time"}, False),
}


@pytest.mark.parametrize(("asked", "changed", "other_tenant"), REPLAYS.values(), ids=REPLAYS.keys())
async def test_a_token_replayed_with_another_query_is_invalid_page_token(
    users: Stub, tenant: str, asked: dict[str, Any], changed: dict[str, Any], other_tenant: bool
) -> None:
    page = await first_page(users, tenant, **asked)
    caller = tenant + "-other" if other_tenant else tenant
    if other_tenant:
        # The other tenant has users too: a token that leaked across would return them.
        for i in range(5):
            await create(users, caller, username=f"tok{i}")

    error = await fails(
        users.ListUsers(
            user_pb2.ListUsersRequest(
                page_size=2, page_token=page.next_page_token, **{**asked, **changed}
            ),
            metadata=md(caller),
        )
    )

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_PAGE_TOKEN"
    assert list(error.violations) == ["page_token"]


async def test_a_token_survives_changes_that_are_not_part_of_the_query(
    users: Stub, tenant: str
) -> None:
    # The control for the replays above: page size and count mode may change mid-walk.
    query = {"filter": 'username = "tok*"', "order_by": "username desc", "show_deleted": True}
    page = await first_page(users, tenant, **query)

    rest = await users.ListUsers(
        user_pb2.ListUsersRequest(
            page_size=10,
            page_token=page.next_page_token,
            count_mode=query_pb2.COUNT_MODE_EXACT,
            **query,
        ),
        metadata=md(tenant),
    )

    assert [u.username for u in [*page.users, *rest.users]] == [f"tok{i}" for i in range(4, -1, -1)]
    assert rest.next_page_token == ""
    assert rest.total_size == 5


# ------------------------------------------------------------ etags


async def test_concurrent_updates_with_the_same_etag_let_exactly_one_win(
    server: Running, users: Stub, tenant: str
) -> None:
    async with aio.insecure_channel(server.app.address) as channel:
        second = user_pb2_grpc.UserServiceStub(channel)
        for round_ in range(6):
            created = await create(users, tenant, username=f"race{round_}")
            seen_a, seen_b = await asyncio.gather(
                get(users, tenant, created.id), get(second, tenant, created.id)
            )
            assert seen_a.etag == seen_b.etag == created.etag

            results = await asyncio.gather(
                update(
                    users, tenant, user_pb2.User(id=created.id, etag=seen_a.etag, display_name="A")
                ),
                update(
                    second, tenant, user_pb2.User(id=created.id, etag=seen_b.etag, display_name="B")
                ),
                return_exceptions=True,
            )

            winners = [r for r in results if isinstance(r, user_pb2.User)]
            losers = [r for r in results if isinstance(r, aio.AioRpcError)]
            assert len(winners) == 1, results
            assert len(losers) == 1, results
            (winner,), (loser,) = winners, losers
            assert loser.code() == grpc.StatusCode.ABORTED
            assert details(loser).reason == "ETAG_MISMATCH"
            stored = await get(users, tenant, created.id)
            assert stored == winner
            assert stored.display_name in ("A", "B")
            assert stored.etag != created.etag
