"""The DianaBot pack (schemas/dianabot, seed 004) end to end, on SQLite and PostgreSQL: a
user's rank on the points leaderboard (RankUser), points per source and a leaderboard of
points earned (AggregatePointTransactions), an auction's participants
(AggregateAuctionBids) and an event's leaderboard with one line per user
(AggregateGameResults), each checked against the values computed in Python from the rows
the test made; other tenants aggregate and rank none of them."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from typing import Any

import grpc
import pytest

from tests.conftest import Running
from tests.declared import Client, ids
from tests.e2e.grouping import Group, agg, every_group, groups_of
from tests.e2e.packs import diana
from tests.e2e.packs.diana import PACKAGE, add_points, bot_user
from tests.e2e.packs.support import at, counted, create, listed, transact
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

PACK, EXTENSIONS = diana.PACK, diana.EXTENSIONS  # what the pack_server fixture serves
RANK = "UserService/RankUser"
LEADERBOARD = "points desc"


@pytest.fixture
def c(pack_server: Running) -> Client:
    """A client of a tenant of the test's own."""
    return Client(pack_server.channel, schema=PACK, package=PACKAGE)


async def aggregate(c: Client, resource: str, **request: Any) -> list[Group]:
    """Every group of Aggregate<resource>s, page by page."""
    method = f"{resource}Service/Aggregate{resource}s"
    pages = await every_group(lambda **r: c(method, **r), **request)
    return [group for page in pages for group in page]


# ---------------------------------------------------------------- User aggregate


async def test_get_user_rank_by_points(c: Client) -> None:
    points = [50, 20, 80, 50, 5, 80, 0, 50]
    made = [await bot_user(c, p) for p in points]
    gone = await bot_user(c, 1000)
    await c("UserService/DeleteUser", id=gone.id)
    board = ids(await listed(c, "User", order_by=LEADERBOARD, page_size=3))

    for user in made:
        answer = await c(RANK, id=user.id, order_by=LEADERBOARD)
        # The place on the leaderboard ListUsers shows: ties take consecutive places.
        assert (answer.rank, answer.total_size) == (board.index(user.id) + 1, len(made))
        # Ties sharing a rank instead: 1 + the users with more points.
        shared = 1 + await counted(c, "User", f"points > {user.points}")
        assert shared == 1 + sum(other.points > user.points for other in made)
        assert shared <= answer.rank < shared + points.count(user.points)
    assert (await c(RANK, id=gone.id, order_by=LEADERBOARD)).rank == 0  # soft-deleted
    error = await fails(c.as_tenant(c.tenant + "-other")(RANK, id=made[0].id))
    assert error.code == grpc.StatusCode.NOT_FOUND


async def test_rank_among_a_role(c: Client) -> None:
    rng = random.Random(7)
    made = [
        await bot_user(c, rng.randint(0, 100), role=rng.choice(["USER_ROLE_VIP", "USER_ROLE_USER"]))
        for _ in range(10)
    ]
    vip = 'role = "vip"'
    board = ids(await listed(c, "User", filter=vip, order_by=LEADERBOARD))

    for user in made:
        answer = await c(RANK, id=user.id, order_by=LEADERBOARD, filter=vip)
        place = board.index(user.id) + 1 if user.id in board else 0  # 0: not a VIP
        assert (answer.rank, answer.total_size) == (place, len(board))


async def test_users_per_level_and_their_points(c: Client) -> None:
    rng = random.Random(8)
    made = [await bot_user(c, rng.randint(1, 500), level=rng.randint(1, 4)) for _ in range(12)]

    groups = await aggregate(
        c,
        "User",
        group_by=["level"],
        aggregations=[agg("count", alias="users"), agg("avg", "points"), agg("max", "points")],
    )

    per_level: dict[int, list[int]] = defaultdict(list)
    for user in made:
        per_level[user.level].append(user.points)
    assert [key["level"] for key, _ in groups] == sorted(per_level)
    for key, values in groups:
        mine = per_level[int(key["level"])]
        assert values == {
            "users": len(mine),
            "avg_points": pytest.approx(sum(mine) / len(mine)),
            "max_points": max(mine),
        }


# ---------------------------------------------------------------- Point aggregate

POINTS = "PointTransactionService/AggregatePointTransactions"


async def test_points_per_source_and_a_leaderboard_of_points_earned(c: Client) -> None:
    players = [await bot_user(c) for _ in range(4)]
    rng = random.Random(9)
    earned: dict[tuple[str, str], int] = defaultdict(int)
    for _ in range(16):
        who, source, amount = (
            rng.choice(players),
            rng.choice(["trivia", "mission"]),
            rng.randint(1, 50),
        )
        earned[who.id, source] += amount
        await transact(c, *add_points(c, who.id, amount, source))
    total = {p.id: sum(n for (who, _), n in earned.items() if who == p.id) for p in players}
    rich = max(players, key=lambda p: total[p.id])
    poorer = next(p for p in players if p is not rich)
    await c(
        "PointTransactionService/TransferPoints",
        from_user_id=rich.id,
        to_user_id=poorer.id,
        amount=1,
    )

    per_source = await aggregate(
        c,
        "PointTransaction",
        filter=f'user_id = "{rich.id}"',
        group_by=["source"],
        aggregations=[agg("sum", "amount")],
    )
    first = await c(
        POINTS,
        filter='kind = "earn"',
        group_by=["user_id"],
        aggregations=[agg("sum", "amount", "earned")],
        order_by="earned desc",
        page_size=2,
    )
    rest = await c(
        POINTS,
        filter='kind = "earn"',
        group_by=["user_id"],
        aggregations=[agg("sum", "amount", "earned")],
        order_by="earned desc",
        page_size=2,
        page_token=first.next_page_token,
    )

    expected = {source: n for (who, source), n in earned.items() if who == rich.id}
    expected["transfer"] = -1
    assert {key["source"]: values["sum_amount"] for key, values in per_source} == expected
    board = sorted((p.id for p in players if total[p.id]), key=lambda u: (-total[u], u))
    got = groups_of(first) + groups_of(rest)
    assert [(key["user_id"], values["earned"]) for key, values in got] == [
        (u, total[u]) for u in board
    ]
    assert len(groups_of(first)) == 2


# ---------------------------------------------------------------- Auction aggregate


async def test_auction_participants(c: Client) -> None:
    made = await create(c, "Auction", title="a lamp", starting_price=10)
    other = await create(c, "Auction", title="a clock", starting_price=1)
    bidders = [await bot_user(c) for _ in range(3)]
    rng = random.Random(10)
    bids: dict[str, list[int]] = defaultdict(list)
    price = 10
    for _ in range(9):
        who = rng.choice(bidders)
        await c("AuctionBidService/PlaceBid", auction_id=made.id, user_id=who.id, amount=price)
        bids[who.id].append(price)
        price += rng.randint(1, 20)
    await c("AuctionBidService/PlaceBid", auction_id=other.id, user_id=bidders[0].id, amount=999)

    groups = await aggregate(
        c,
        "AuctionBid",
        filter=f'auction_id = "{made.id}"',
        group_by=["user_id"],
        aggregations=[agg("max", "amount", "top_bid"), agg("count", alias="bids")],
        order_by="top_bid desc",
    )

    by_top = sorted(bids, key=lambda u: -max(bids[u]))
    assert groups == [
        ({"user_id": u}, {"top_bid": max(bids[u]), "bids": len(bids[u])}) for u in by_top
    ]


# ---------------------------------------------------------------- Game aggregate


async def test_an_events_leaderboard_one_line_per_user(c: Client) -> None:
    window = {"start_time": at(1_800_000_000), "end_time": at(1_800_086_400)}
    event = await create(c, "GameEvent", name="Halloween", **window)
    other = await create(c, "GameEvent", name="Solstice", **window)
    players = [await bot_user(c) for _ in range(5)]
    rng = random.Random(11)
    plays: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for _ in range(15):
        who, score, points = rng.choice(players), rng.randint(0, 1000), rng.randint(0, 30)
        plays[who.id].append((score, points))
        result = {"game_type": "GAME_TYPE_CHALLENGE", "score": score, "points_awarded": points}
        await create(c, "GameResult", user_id=who.id, event_id=event.id, **result)
    await create(
        c,
        "GameResult",
        user_id=players[0].id,
        event_id=other.id,
        score=5000,
        game_type="GAME_TYPE_CHALLENGE",
    )

    page = await c(
        "GameResultService/AggregateGameResults",
        filter=f'event_id = "{event.id}"',
        group_by=["user_id"],
        aggregations=[
            agg("max", "score", "best"),
            agg("sum", "points_awarded", "points"),
            agg("count", alias="plays"),
        ],
        order_by="best desc",
        page_size=3,
    )

    def line(u: str) -> Group:
        mine = plays[u]
        best = max(s for s, _ in mine)
        return {"user_id": u}, {"best": best, "points": sum(p for _, p in mine), "plays": len(mine)}

    top = sorted(plays, key=lambda u: (-max(s for s, _ in plays[u]), u))[:3]  # ties: by id
    assert groups_of(page) == [line(u) for u in top]
    assert bool(page.next_page_token) == (len(plays) > 3)


# ---------------------------------------------------------------- other tenants


async def _ledger_line(c: Client) -> None:
    await transact(c, *add_points(c, (await bot_user(c)).id, 5, "test"))


async def _bid(c: Client) -> None:
    made = await create(c, "Auction", title="a", starting_price=1)
    await c(
        "AuctionBidService/PlaceBid", auction_id=made.id, user_id=(await bot_user(c)).id, amount=3
    )


async def _result(c: Client) -> None:
    await create(
        c, "GameResult", user_id=(await bot_user(c)).id, game_type="GAME_TYPE_TRIVIA", score=7
    )


async def _user(c: Client) -> None:
    await bot_user(c, 7)


MAKE = {"PointTransaction": _ledger_line, "AuctionBid": _bid, "GameResult": _result, "User": _user}
# The field each summed, and the one row's value of it that the maker wrote.
SUMMED = {
    "PointTransaction": ("amount", 5),
    "AuctionBid": ("amount", 3),
    "GameResult": ("score", 7),
    "User": ("points", 7),
}


@pytest.mark.parametrize("resource", sorted(MAKE))
async def test_another_tenant_aggregates_none_of_the_rows(c: Client, resource: str) -> None:
    await MAKE[resource](c)
    other = c.as_tenant(f"t-{uuid.uuid4().hex[:12]}")
    field, value = SUMMED[resource]
    request = {"aggregations": [agg("count"), agg("sum", field, "total")]}

    mine = await aggregate(c, resource, **request)
    theirs = await aggregate(other, resource, **request)
    grouped = await aggregate(other, resource, group_by=["id"], **request)

    assert mine == [({}, {"count": 1, "total": value})]
    assert (theirs, grouped) == ([({}, {"count": 0, "total": None})], [])
