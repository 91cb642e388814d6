"""The DianaBot pack (schemas/dianabot, seed 004) end to end, on SQLite and PostgreSQL:
the standard methods of every resource of its nine aggregates, tenant isolation, and the
methods of the User and Point aggregates, each answered over gRPC as the seed's method
promised. The other aggregates: test_dianabot_world.py and test_dianabot_games.py; ranks,
leaderboards and statistics: test_dianabot_stats.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from tests.conftest import Running
from tests.declared import Client, ids
from tests.e2e.packs import diana
from tests.e2e.packs.diana import PACKAGE, add_points, balance, bot_user, telegram_id
from tests.e2e.packs.support import (
    at,
    call,
    counted,
    create,
    listed,
    mask,
    plural,
    struct,
    transact,
)
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

PACK, EXTENSIONS = diana.PACK, diana.EXTENSIONS  # what the pack_server fixture serves
SPEND, TRANSFER_IN, TRANSFER_OUT = 2, 3, 4  # PointTransactionKind
COMPLETED, CLAIMED = 2, 3  # UserMissionStatus
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture
def c(pack_server: Running) -> Client:
    """A client of a tenant of the test's own."""
    return Client(pack_server.channel, schema=PACK, package=PACKAGE)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- every resource

Make = Callable[[int], dict[str, Any]]


def _each(field: str, rows: list[Any], **more: Any) -> Make:
    """Row i refers to rows[i] through `field`."""
    return lambda i: {field: rows[i].id, **more}


async def _users(c: Client) -> list[Any]:
    return [await bot_user(c) for _ in range(3)]


async def _catalogue(c: Client, resource: str, **fields: Any) -> list[Any]:
    return [await create(c, resource, code=unique("c"), **fields) for _ in range(3)]


async def _per_user(c: Client) -> Make:
    return _each("user_id", await _users(c))


async def _awards(c: Client, resource: str, field: str, **fields: Any) -> Make:
    owner = await bot_user(c)
    return _each(field, await _catalogue(c, resource, **fields), user_id=owner.id)


async def _one_user(c: Client, **fields: Any) -> Make:
    owner = await bot_user(c)
    return lambda i: {"user_id": owner.id, **fields}


async def _channel_rows(c: Client, many_users: bool) -> Make:
    channel = await create(c, "Channel", telegram_chat_id=telegram_id(), title="ch")
    if many_users:
        return _each("user_id", await _users(c), channel_id=channel.id)
    owner = await bot_user(c)
    return lambda i: {"channel_id": channel.id, "user_id": owner.id}


async def _missions(c: Client) -> Make:
    owner = await bot_user(c)
    missions = [await create(c, "Mission", code=unique("m"), title="m") for _ in range(3)]
    return _each("mission_id", missions, user_id=owner.id)


async def _plain(make: Make) -> Make:
    return make


BUILD: dict[str, Callable[[Client], Awaitable[Make]]] = {
    "User": lambda c: _plain(lambda i: {"telegram_id": telegram_id()}),
    "UserProfile": _per_user,
    "UserStatistics": _per_user,
    "PointTransaction": lambda c: _one_user(c, amount=5, source="test"),
    "Mission": lambda c: _plain(lambda i: {"code": unique("m"), "title": f"m{i}"}),
    "UserMission": _missions,
    "StoryFragment": lambda c: _plain(lambda i: {"key": unique("f"), "title": "t", "content": "x"}),
    "NarrativeProgress": _per_user,
    "LorePiece": lambda c: _plain(lambda i: {"code": unique("l"), "title": f"l{i}"}),
    "UserLorePiece": lambda c: _awards(c, "LorePiece", "lore_piece_id", title="l"),
    "Achievement": lambda c: _plain(lambda i: {"code": unique("a"), "name": f"a{i}"}),
    "UserAchievement": lambda c: _awards(c, "Achievement", "achievement_id", name="a"),
    "Badge": lambda c: _plain(lambda i: {"code": unique("b"), "name": f"b{i}"}),
    "UserBadge": lambda c: _awards(c, "Badge", "badge_id", name="b"),
    "Channel": lambda c: _plain(lambda i: {"telegram_chat_id": telegram_id(), "title": "ch"}),
    "ChannelRequest": lambda c: _channel_rows(c, many_users=False),
    "ChannelMember": lambda c: _channel_rows(c, many_users=True),
    "Auction": lambda c: _plain(lambda i: {"title": f"a{i}", "starting_price": 10}),
    "TriviaQuestion": lambda c: _plain(
        lambda i: {"question": f"q{i}?", "options": ["a", "b"], "correct_option": 1}
    ),
    "GameResult": lambda c: _one_user(c, game_type="GAME_TYPE_TRIVIA", score=3),
    "GameEvent": lambda c: _plain(
        lambda i: {"name": f"e{i}", "start_time": at(1_800_000_000), "end_time": at(1_800_086_400)}
    ),
    "ConfigEntry": lambda c: _plain(lambda i: {"key": unique("k"), "value": struct(value=i)}),
    "FeatureFlag": lambda c: _plain(lambda i: {"name": unique("flag")}),
    "AccessToken": lambda c: _plain(lambda i: {"token": unique("token")}),
}
# A field `update_user(user_id, updates)` and its kin may change; None: the resource is a
# ledger, written once.
UPDATES: dict[str, tuple[str, Any] | None] = {
    "User": ("first_name", "Diana"),
    "UserProfile": ("archetype", "explorer"),
    "UserStatistics": ("login_streak", 4),
    "PointTransaction": None,
    "Mission": ("title", "renamed"),
    "UserMission": ("status", COMPLETED),
    "StoryFragment": ("chapter", 2),
    "NarrativeProgress": ("choices_made", struct(f1="left")),
    "LorePiece": ("category", "myth"),
    "UserLorePiece": ("source", "quiz"),
    "Achievement": ("points_reward", 50),
    "UserAchievement": ("source", "event"),
    "Badge": ("icon", "star.png"),
    "UserBadge": ("source", "event"),
    "Channel": ("title", "renamed"),
    "ChannelRequest": ("status", 2),
    "ChannelMember": ("role", 2),
    "Auction": ("description", "a lamp"),
    "TriviaQuestion": ("category", "history"),
    "GameResult": None,
    "GameEvent": ("points_multiplier", 2.0),
    "ConfigEntry": ("description", "how many"),
    "FeatureFlag": ("enabled", True),
    "AccessToken": ("duration_days", 7),
}


@pytest.mark.parametrize("resource", sorted(BUILD))
async def test_standard_methods_of_every_resource(c: Client, resource: str) -> None:
    make = await BUILD[resource](c)
    made = [await create(c, resource, **make(i)) for i in range(3)]
    service, rs = f"{resource}Service", plural(c, resource)

    assert await c(f"{service}/Get{resource}", id=made[1].id) == made[1]
    assert ids(await listed(c, resource, order_by="create_time", skip=1)) == ids(made[1:])
    assert await counted(c, resource, f'id = "{made[2].id}"') == 1
    batch = await c(f"{service}/BatchGet{rs}", ids=[made[2].id, made[0].id])
    assert ids(batch.ListFields()[0][1]) == [made[2].id, made[0].id]

    if UPDATES[resource] is not None:
        field, value = UPDATES[resource]
        holder = c.message(resource, id=made[0].id, **{field: value})
        method = descriptor_holder(c, resource)
        updated = await c(
            f"{service}/Update{resource}", update_mask=mask(field), **{method: holder}
        )
        assert getattr(updated, field) == value
        await c(f"{service}/Delete{resource}", id=made[0].id, force=True)
        assert (await fails(c(f"{service}/Get{resource}", id=made[0].id))).code == NOT_FOUND


def descriptor_holder(c: Client, resource: str) -> str:
    """The Update request's field holding the resource ("user_statistics")."""
    request = c.message(f"Update{resource}Request")
    return next(f.name for f in request.DESCRIPTOR.fields if f.name != "update_mask")


@pytest.mark.parametrize("resource", sorted(BUILD))
async def test_another_tenant_sees_none_of_the_rows(c: Client, resource: str) -> None:
    made = await create(c, resource, **(await BUILD[resource](c))(0))
    other = c.as_tenant(unique("t"))

    error = await fails(other(f"{resource}Service/Get{resource}", id=made.id))
    assert error.code == NOT_FOUND
    assert await listed(other, resource) == []
    assert await counted(other, resource, "") == 0


# ---------------------------------------------------------------- User aggregate


async def test_get_by_id_and_by_telegram_id(c: Client) -> None:
    made = await create(c, "User", telegram_id=123, username="test_user")
    assert (await c("UserService/GetUser", id=made.id)).username == "test_user"
    assert ids(await listed(c, "User", filter="telegram_id = 123")) == [made.id]
    error = await fails(create(c, "User", telegram_id=123))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS


async def test_get_top_by_points(c: Client) -> None:
    made = [await bot_user(c, points) for points in (30, 90, 10, 60, 75)]
    page = await c("UserService/ListUsers", order_by="points desc", page_size=3)
    expected = sorted(made, key=lambda u: -u.points)[:3]
    assert ids(page.users) == ids(expected)
    assert [u.points for u in page.users] == [90, 75, 60]


async def test_get_admins(c: Client) -> None:
    admin = await bot_user(c, role="USER_ROLE_ADMIN")
    await bot_user(c, role="USER_ROLE_VIP")
    await bot_user(c)
    assert ids(await listed(c, "User", filter='role = "admin"')) == [admin.id]


async def test_get_user_profile_parts(c: Client) -> None:
    made = await bot_user(c, 40)
    profile = await create(c, "UserProfile", user_id=made.id, archetype="romantic")
    stats = await create(c, "UserStatistics", user_id=made.id, login_streak=3)
    badge = await create(c, "Badge", code="early", name="Early bird")
    held = await create(c, "UserBadge", user_id=made.id, badge_id=badge.id)
    mine = f'user_id = "{made.id}"'

    assert ids(await listed(c, "UserProfile", filter=mine)) == [profile.id]
    assert ids(await listed(c, "UserStatistics", filter=mine)) == [stats.id]
    assert ids(await listed(c, "UserBadge", filter=mine)) == [held.id]
    again = await fails(create(c, "UserProfile", user_id=made.id))  # one per user
    assert again.code == grpc.StatusCode.ALREADY_EXISTS


# ---------------------------------------------------------------- Point aggregate


async def test_add_points_and_get_user_balance(c: Client) -> None:
    made = await bot_user(c)
    await transact(c, *add_points(c, made.id, 100, "test"))
    await transact(c, *add_points(c, made.id, 25, "trivia"))

    assert await balance(c, made.id) == 125
    history = await listed(
        c, "PointTransaction", filter=f'user_id = "{made.id}"', order_by="create_time desc"
    )
    assert [(t.amount, t.source) for t in history] == [(25, "trivia"), (100, "test")]


async def test_add_points_for_a_missing_user_leaves_no_ledger_line(c: Client) -> None:
    error = await fails(transact(c, *add_points(c, str(uuid.uuid4()), 10, "test")))
    assert error.code == NOT_FOUND
    assert await counted(c, "PointTransaction", "") == 0


async def test_spend_points_guarded_by_the_etag_read(c: Client) -> None:
    made = await bot_user(c, 50)

    def spend(etag: str, amount: int) -> list[Any]:
        lower = c.message("IncrementUserCountersRequest", id=made.id, points=-amount, etag=etag)
        line = c.message(
            "PointTransaction", user_id=made.id, amount=-amount, kind=SPEND, source="shop"
        )
        create_line = c.message("CreatePointTransactionRequest", point_transaction=line)
        return [
            call(c, "UserService/IncrementUserCounters", lower),
            call(c, "PointTransactionService/CreatePointTransaction", create_line),
        ]

    await transact(c, *spend(made.etag, 30))
    stale = await fails(transact(c, *spend(made.etag, 30)))  # read before the first spend

    assert (stale.code, stale.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    assert await balance(c, made.id) == 20
    assert await counted(c, "PointTransaction", 'kind = "spend"') == 1


async def transfer(c: Client, sender: str, receiver: str, amount: int, **more: Any) -> Any:
    return await c(
        "PointTransactionService/TransferPoints",
        from_user_id=sender,
        to_user_id=receiver,
        amount=amount,
        **more,
    )


async def test_transfer_points_moves_them_and_writes_both_lines(c: Client) -> None:
    ann, bob = await bot_user(c, 100), await bot_user(c, 5)

    moved = await transfer(c, ann.id, bob.id, 40, description="gift")

    assert (await balance(c, ann.id), await balance(c, bob.id)) == (60, 45)
    lines = [(t.user_id, t.amount, t.kind, t.counterpart_user_id) for t in moved.point_transactions]
    assert lines == [(ann.id, -40, TRANSFER_OUT, bob.id), (bob.id, 40, TRANSFER_IN, ann.id)]
    assert await counted(c, "PointTransaction", 'source = "transfer"') == 2


async def test_a_transfer_beyond_the_balance_is_refused_and_changes_nothing(c: Client) -> None:
    ann, bob = await bot_user(c, 30), await bot_user(c)

    error = await fails(transfer(c, ann.id, bob.id, 31))

    assert (error.code, error.reason) == (FAILED_PRECONDITION, "INSUFFICIENT_POINTS")
    assert (await balance(c, ann.id), await balance(c, bob.id)) == (30, 0)
    assert await counted(c, "PointTransaction", "") == 0


async def test_concurrent_transfers_never_overdraw(c: Client) -> None:
    ann, bob, cy = await bot_user(c, 100), await bot_user(c, 10), await bot_user(c)

    async def attempt(sender: Any, receiver: Any, amount: int) -> grpc.StatusCode | None:
        try:
            await transfer(c, sender.id, receiver.id, amount)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return None

    plan = [(ann, bob, 30), (ann, cy, 30), (bob, ann, 20), (ann, cy, 30), (ann, bob, 30)] * 2
    outcomes = await asyncio.gather(*(attempt(*step) for step in plan))

    assert set(outcomes) <= {None, FAILED_PRECONDITION}
    expected = {ann.id: 100, bob.id: 10, cy.id: 0}
    moved = [step for step, outcome in zip(plan, outcomes, strict=True) if outcome is None]
    for sender, receiver, amount in moved:
        expected[sender.id] -= amount
        expected[receiver.id] += amount
    assert {key: await balance(c, key) for key in expected} == expected
    assert min(expected.values()) >= 0
    assert FAILED_PRECONDITION in outcomes  # 100 + 10 cannot cover every step
    assert await counted(c, "PointTransaction", "") == 2 * len(moved)


async def test_transfer_points_refuses_bad_input_and_other_tenants_users(c: Client) -> None:
    ann, bob = await bot_user(c, 10), await bot_user(c)
    bad = await fails(transfer(c, ann.id, bob.id, 0))
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad.violations) == {"amount"}
    same = await fails(transfer(c, ann.id, ann.id, 5))
    assert set(same.violations) == {"to_user_id"}
    other = c.as_tenant(unique("t"))
    stranger = await bot_user(other, 50)
    assert (await fails(transfer(c, ann.id, stranger.id, 5))).code == NOT_FOUND
    assert (await fails(transfer(other, ann.id, stranger.id, 5))).code == NOT_FOUND
    assert (await balance(c, ann.id), await balance(other, stranger.id)) == (10, 50)
    await c("UserService/DeleteUser", id=bob.id)
    gone = await fails(transfer(c, ann.id, bob.id, 5))
    assert (gone.code, gone.reason) == (FAILED_PRECONDITION, "RESOURCE_DELETED")
    assert await balance(c, ann.id) == 10


async def test_a_retried_transfer_moves_the_points_once(c: Client) -> None:
    ann, bob = await bot_user(c, 50), await bot_user(c)
    request_id = str(uuid.uuid4())

    first = await transfer(c, ann.id, bob.id, 20, request_id=request_id)
    again = await transfer(c, ann.id, bob.id, 20, request_id=request_id)

    assert again == first
    assert (await balance(c, ann.id), await balance(c, bob.id)) == (30, 20)


async def test_a_transfer_in_a_transact_is_undone_with_it(c: Client) -> None:
    ann, bob = await bot_user(c, 50), await bot_user(c)
    move = c.message("TransferPointsRequest", from_user_id=ann.id, to_user_id=bob.id, amount=20)

    error = await fails(
        transact(
            c,
            call(c, "PointTransactionService/TransferPoints", move),
            *add_points(c, str(uuid.uuid4()), 5, "gift"),  # no such user: NOT_FOUND
        )
    )

    assert error.code == NOT_FOUND
    assert (await balance(c, ann.id), await balance(c, bob.id)) == (50, 0)
    assert await counted(c, "PointTransaction", "") == 0
