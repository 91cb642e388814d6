"""The DianaBot pack (schemas/dianabot, seed 004) end to end, on SQLite and PostgreSQL:
the Auction (PlaceBid under concurrency, settling as a Transact), Game and Config
aggregates' methods, each answered over gRPC as the seed's method promised."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import grpc
import pytest

from tests.conftest import Running
from tests.declared import Client, ids
from tests.e2e.packs import diana
from tests.e2e.packs.diana import (
    PACKAGE,
    balance,
    bot_user,
    channel,
    creating,
    updating,
)
from tests.e2e.packs.support import at, call, counted, create, listed, struct, transact, when
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

PACK, EXTENSIONS = diana.PACK, diana.EXTENSIONS  # what the pack_server fixture serves
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
APPROVED = 2  # ChannelRequestStatus
CLOSED = 3  # AuctionStatus
SPEND = 2  # PointTransactionKind


@pytest.fixture
def c(pack_server: Running) -> Client:
    """A client of a tenant of the test's own."""
    return Client(pack_server.channel, schema=PACK, package=PACKAGE)


# ---------------------------------------------------------------- Auction aggregate


async def auction(c: Client, starting_price: int = 10, **fields: Any) -> Any:
    return await create(c, "Auction", title="a lamp", starting_price=starting_price, **fields)


async def bid(c: Client, auction_id: str, user_id: str, amount: int, **more: Any) -> Any:
    return await c(
        "AuctionBidService/PlaceBid", auction_id=auction_id, user_id=user_id, amount=amount, **more
    )


async def test_active_auctions(c: Client) -> None:
    open_ = [await auction(c), await auction(c)]
    await auction(c, status="AUCTION_STATUS_DRAFT")
    found = await listed(c, "Auction", filter='status = "active"', order_by="create_time")
    assert ids(found) == ids(open_)


async def test_place_bid_raises_the_price_and_records_the_bid(c: Client) -> None:
    made = await auction(c, starting_price=10)
    ann, bob = await bot_user(c), await bot_user(c)

    below_start = await fails(bid(c, made.id, ann.id, 9))
    first = await bid(c, made.id, ann.id, 10)
    second = await bid(c, made.id, bob.id, 15)
    lower = await fails(bid(c, made.id, ann.id, 12))
    equal = await fails(bid(c, made.id, ann.id, 15))

    assert {below_start.reason, lower.reason, equal.reason} == {"BID_TOO_LOW"}
    assert lower.code == FAILED_PRECONDITION
    now = await c("AuctionService/GetAuction", id=made.id)
    assert (now.current_price, now.leader_user_id, now.bid_count) == (15, bob.id, 2)
    bids = await listed(c, "AuctionBid", filter=f'auction_id = "{made.id}"', order_by="amount desc")
    assert [(b.id, b.user_id, b.amount) for b in bids] == [
        (second.id, bob.id, 15),
        (first.id, ann.id, 10),
    ]


async def test_concurrent_bids_leave_the_highest(c: Client) -> None:
    made = await auction(c, starting_price=1)
    bidders = [await bot_user(c) for _ in range(4)]
    amounts = random.Random(4).sample(range(1, 500), 16)

    async def attempt(i: int, amount: int) -> Any:
        try:
            return await bid(c, made.id, bidders[i % 4].id, amount)
        except grpc.aio.AioRpcError as exc:
            return exc

    results = await asyncio.gather(*(attempt(i, a) for i, a in enumerate(amounts)))

    taken = [r for r in results if not isinstance(r, grpc.aio.AioRpcError)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert all(r.code() == FAILED_PRECONDITION for r in refused)
    now = await c("AuctionService/GetAuction", id=made.id)
    assert (now.current_price, now.bid_count) == (max(amounts), len(taken))
    assert await counted(c, "AuctionBid", f'auction_id = "{made.id}"') == len(taken)
    # Each bid taken beat every bid taken before it.
    in_order = sorted(taken, key=lambda b: b.create_time.ToNanoseconds())
    assert [b.amount for b in in_order] == sorted(b.amount for b in taken)


async def test_bids_a_closed_ended_or_deleted_auction_refuses(c: Client) -> None:
    made = await bot_user(c)
    closed = await auction(c, status="AUCTION_STATUS_CLOSED")
    ended = await auction(c, end_time=at(1_600_000_000))
    deleted = await auction(c)
    await c("AuctionService/DeleteAuction", id=deleted.id)

    assert (await fails(bid(c, closed.id, made.id, 50))).reason == "AUCTION_NOT_OPEN"
    assert (await fails(bid(c, ended.id, made.id, 50))).reason == "AUCTION_NOT_OPEN"
    assert (await fails(bid(c, deleted.id, made.id, 50))).reason == "RESOURCE_DELETED"
    for each in (closed, ended):
        assert (await c("AuctionService/GetAuction", id=each.id)).bid_count == 0


async def test_place_bid_refuses_bad_input_strangers_and_other_tenants(c: Client) -> None:
    made, bidder = await auction(c), await bot_user(c)
    other = c.as_tenant(f"t-{uuid.uuid4().hex[:16]}")
    stranger = await bot_user(other)

    bad = await fails(bid(c, made.id, bidder.id, 0))
    unknown_user = await fails(bid(c, made.id, stranger.id, 50))
    from_elsewhere = await fails(bid(other, made.id, stranger.id, 50))

    assert (bad.code, set(bad.violations)) == (grpc.StatusCode.INVALID_ARGUMENT, {"amount"})
    assert unknown_user.code == NOT_FOUND
    assert from_elsewhere.code == NOT_FOUND
    now = await c("AuctionService/GetAuction", id=made.id)
    assert (now.current_price, now.bid_count) == (0, 0)  # the refused bid raised nothing


async def test_settle_an_auction_in_one_transact(c: Client) -> None:
    made, winner = await auction(c), await bot_user(c, 100)
    await bid(c, made.id, winner.id, 40)
    won = await c("AuctionService/GetAuction", id=made.id)
    payer = await c("UserService/GetUser", id=winner.id)
    close = updating(c, "Auction", "auction", id=won.id, etag=won.etag, status=CLOSED)
    charge = c.message(
        "IncrementUserCountersRequest", id=winner.id, etag=payer.etag, points=-won.current_price
    )
    line = c.message(
        "PointTransaction",
        user_id=winner.id,
        amount=-won.current_price,
        kind=SPEND,
        source="auction",
    )

    await transact(
        c,
        call(c, "AuctionService/UpdateAuction", close),
        call(c, "UserService/IncrementUserCounters", charge),
        call(
            c,
            "PointTransactionService/CreatePointTransaction",
            c.message("CreatePointTransactionRequest", point_transaction=line),
        ),
    )

    assert await balance(c, winner.id) == 60
    assert (await fails(bid(c, made.id, winner.id, 90))).reason == "AUCTION_NOT_OPEN"


# ---------------------------------------------------------------- Game aggregate


async def question(c: Client, category: str, difficulty: str = "EASY", **more: Any) -> Any:
    return await create(
        c,
        "TriviaQuestion",
        question="?",
        options=["a", "b", "c"],
        correct_option=2,
        category=category,
        difficulty=f"DIFFICULTY_{difficulty}",
        **more,
    )


async def test_trivia_questions_by_category_difficulty_and_at_random(c: Client) -> None:
    made = [await question(c, "history", d) for d in ("EASY", "HARD", "EASY")]
    await question(c, "science")
    await question(c, "history", is_active=False)
    text = 'category = "history" AND difficulty = "easy" AND is_active = true'

    assert sorted(ids(await listed(c, "TriviaQuestion", filter=text))) == sorted(
        [made[0].id, made[2].id]
    )
    # A random one: count them, then take the one at a random offset.
    total = await counted(c, "TriviaQuestion", text)
    offset = random.randrange(total)
    page = await c(
        "TriviaQuestionService/ListTriviaQuestions",
        filter=text,
        order_by="create_time",
        skip=offset,
        page_size=1,
    )
    assert ids(page.trivia_questions) == [[made[0].id, made[2].id][offset]]


async def test_results_history_and_an_event_leaderboard(c: Client) -> None:
    event = await create(
        c, "GameEvent", name="Halloween", start_time=at(1_800_000_000), end_time=at(1_800_086_400)
    )
    players = [await bot_user(c) for _ in range(4)]
    scores = [30, 90, 60, 75]
    results = [
        await create(
            c,
            "GameResult",
            user_id=p.id,
            game_type="GAME_TYPE_CHALLENGE",
            score=s,
            event_id=event.id,
        )
        for p, s in zip(players, scores, strict=True)
    ]
    trivia = await create(
        c, "GameResult", user_id=players[0].id, game_type="GAME_TYPE_TRIVIA", is_correct=True
    )

    top = await c(
        "GameResultService/ListGameResults",
        filter=f'event_id = "{event.id}"',
        order_by="score desc",
        page_size=3,
    )
    history = await listed(
        c, "GameResult", filter=f'user_id = "{players[0].id}"', order_by="create_time desc"
    )

    best = sorted(zip(scores, results, strict=True), key=lambda pair: -pair[0])[:3]
    assert ids(top.game_results) == [r.id for _, r in best]
    assert ids(history) == [trivia.id, results[0].id]


async def test_active_events_at_a_moment(c: Client) -> None:
    moment = 1_800_000_000
    windows = [(-100, 100, True), (-100, -10, True), (10, 100, True), (-50, 50, False)]
    made = [
        await create(
            c,
            "GameEvent",
            name=f"e{i}",
            start_time=at(moment + start),
            end_time=at(moment + end),
            is_active=active,
        )
        for i, (start, end, active) in enumerate(windows)
    ]
    text = (
        f"is_active = true AND start_time <= {when(at(moment))} AND end_time >= {when(at(moment))}"
    )

    assert ids(await listed(c, "GameEvent", filter=text, order_by="start_time")) == [made[0].id]


async def test_trivia_answers_counted_in_the_users_statistics(c: Client) -> None:
    made = await bot_user(c)
    stats = await create(c, "UserStatistics", user_id=made.id)
    for correct in (True, False, True):
        stats = await c(
            "UserStatisticsService/IncrementUserStatisticsCounters",
            id=stats.id,
            trivia_answered=1,
            trivia_correct=int(correct),
        )
    assert (stats.trivia_answered, stats.trivia_correct) == (3, 2)


# ---------------------------------------------------------------- Config aggregate


async def test_config_get_and_set(c: Client) -> None:
    entry = await create(c, "ConfigEntry", key="daily_gift", value=struct(value=10))
    await create(c, "ConfigEntry", key="other", value=struct(value=1))
    changed = updating(c, "ConfigEntry", "config_entry", id=entry.id, value=struct(value=25))

    await c("ConfigEntryService/UpdateConfigEntry", changed)

    (found,) = await listed(c, "ConfigEntry", filter='key = "daily_gift"')
    assert found.value["value"] == 25
    again = await fails(create(c, "ConfigEntry", key="daily_gift"))
    assert again.code == ALREADY_EXISTS


async def test_feature_flags(c: Client) -> None:
    on = await create(c, "FeatureFlag", name="auctions", enabled=True, rollout_percentage=50)
    await create(c, "FeatureFlag", name="minigames")
    beta = await create(c, "FeatureFlag", name="lore", enabled=True, conditions=struct(role="vip"))

    (auctions,) = await listed(c, "FeatureFlag", filter='name = "auctions"')
    assert (auctions.enabled, auctions.rollout_percentage) == (True, 50)
    enabled = await listed(c, "FeatureFlag", filter="enabled = true", order_by="name")
    assert ids(enabled) == [on.id, beta.id]
    assert ids(await listed(c, "FeatureFlag", filter='conditions.role = "vip"')) == [beta.id]


async def test_an_access_token_is_redeemed_once(c: Client) -> None:
    vip = await channel(c, channel_type="CHANNEL_TYPE_VIP")
    token = await create(c, "AccessToken", token="VIP-0001-ABCD", channel_id=vip.id)
    ann, bob = await bot_user(c), await bot_user(c)
    valid = 'token = "VIP-0001-ABCD" AND redeemed_by_user_id = null'
    assert ids(await listed(c, "AccessToken", filter=valid)) == [token.id]
    assert token.duration_days == 30

    def redeem(user_id: str) -> list[Any]:
        spent = updating(
            c,
            "AccessToken",
            "access_token",
            id=token.id,
            etag=token.etag,
            redeemed_by_user_id=user_id,
            redeemed_time=at(1_800_000_000),
        )
        member = creating(
            c,
            "ChannelMember",
            "channel_member",
            channel_id=vip.id,
            user_id=user_id,
            expire_time=at(1_800_000_000 + token.duration_days * 86_400),
        )
        return [
            call(c, "AccessTokenService/UpdateAccessToken", spent),
            call(c, "ChannelMemberService/CreateChannelMember", member),
        ]

    await transact(c, *redeem(ann.id))
    late = await fails(transact(c, *redeem(bob.id)))

    assert (late.code, late.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    assert await listed(c, "AccessToken", filter=valid) == []
    members = await listed(c, "ChannelMember", filter=f'channel_id = "{vip.id}"')
    assert [m.user_id for m in members] == [ann.id]


async def test_a_retried_bid_is_taken_once(c: Client) -> None:
    made, bidder = await auction(c), await bot_user(c)
    request_id = str(uuid.uuid4())

    first = await bid(c, made.id, bidder.id, 20, request_id=request_id)
    again = await bid(c, made.id, bidder.id, 20, request_id=request_id)

    assert again == first  # replayed, not refused as too low
    assert (await c("AuctionService/GetAuction", id=made.id)).bid_count == 1
