"""The DianaBot pack (schemas/dianabot, seed 004) end to end, on SQLite and PostgreSQL:
the Mission, Narrative, Achievement and Channel aggregates' methods, each answered over gRPC as
the seed's method promised. Auctions, games and configuration: test_dianabot_games.py."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tests.conftest import Running
from tests.declared import Client, ids
from tests.e2e.packs import diana
from tests.e2e.packs.diana import (
    PACKAGE,
    add_points,
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
COMPLETED, CLAIMED = 2, 3  # UserMissionStatus
CLOSED = 3  # AuctionStatus
SPEND = 2  # PointTransactionKind


@pytest.fixture
def c(pack_server: Running) -> Client:
    """A client of a tenant of the test's own."""
    return Client(pack_server.channel, schema=PACK, package=PACKAGE)


# ---------------------------------------------------------------- Mission aggregate


async def test_active_missions_by_type(c: Client) -> None:
    daily = await create(c, "Mission", code="d1", title="Say hi", points_reward=10)
    await create(c, "Mission", code="d2", title="Old", is_active=False)
    await create(c, "Mission", code="w1", title="Weekly", mission_type="MISSION_TYPE_WEEKLY")
    found = await listed(c, "Mission", filter='is_active = true AND mission_type = "daily"')
    assert ids(found) == [daily.id]


async def test_mission_progress_completion_and_reward(c: Client) -> None:
    made = await bot_user(c)
    stats = await create(c, "UserStatistics", user_id=made.id)
    mission = await create(c, "Mission", code="m", title="Read 3", target=3, points_reward=40)
    started = await create(c, "UserMission", user_id=made.id, mission_id=mission.id)
    again = await fails(create(c, "UserMission", user_id=made.id, mission_id=mission.id))
    assert again.code == grpc.StatusCode.ALREADY_EXISTS  # one per user and mission

    for _ in range(3):
        progressed = await c(
            "UserMissionService/IncrementUserMissionCounters", id=started.id, progress=1
        )
    assert progressed.progress == mission.target
    done = updating(
        c,
        "UserMission",
        "user_mission",
        id=started.id,
        etag=progressed.etag,
        status=COMPLETED,
        completed_time=at(1),
    )
    completed = await c("UserMissionService/UpdateUserMission", done)

    def claim(etag: str) -> list[Any]:
        claimed = updating(
            c, "UserMission", "user_mission", id=started.id, etag=etag, status=CLAIMED
        )
        count = c.message(
            "IncrementUserStatisticsCountersRequest", id=stats.id, missions_completed=1
        )
        return [
            call(c, "UserMissionService/UpdateUserMission", claimed),
            *add_points(c, made.id, mission.points_reward, "mission"),
            call(c, "UserStatisticsService/IncrementUserStatisticsCounters", count),
        ]

    await transact(c, *claim(completed.etag))
    twice = await fails(transact(c, *claim(completed.etag)))

    assert (twice.code, twice.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")

    assert await balance(c, made.id) == 40
    mine = f'user_id = "{made.id}"'
    assert ids(await listed(c, "UserMission", filter=f'{mine} AND status = "claimed"')) == [
        started.id
    ]
    assert (await listed(c, "UserStatistics", filter=mine))[0].missions_completed == 1


# ---------------------------------------------------------------- Narrative aggregate


async def fragment(c: Client, key: str, chapter: int = 1, position: int = 0, **more: Any) -> Any:
    return await create(
        c,
        "StoryFragment",
        key=key,
        title=key,
        content="...",
        chapter=chapter,
        position=position,
        **more,
    )


async def test_fragment_by_key_and_a_chapter_in_order(c: Client) -> None:
    made = [await fragment(c, key, 1, position) for key, position in (("c", 3), ("a", 1), ("b", 2))]
    await fragment(c, "d", chapter=2)

    assert ids(await listed(c, "StoryFragment", filter='key = "a"')) == [made[1].id]
    in_order = await listed(c, "StoryFragment", filter="chapter = 1", order_by="position")
    assert [f.key for f in in_order] == ["a", "b", "c"]


async def test_fragments_open_at_a_level(c: Client) -> None:
    await fragment(c, "easy", level_required=1)
    await fragment(c, "hard", level_required=5)
    await fragment(c, "vip", level_required=1, is_vip=True)
    found = await listed(c, "StoryFragment", filter="level_required <= 2 AND is_vip = false")
    assert [f.key for f in found] == ["easy"]


async def test_user_progress_moves_and_counts_in_one_transact(c: Client) -> None:
    made = await bot_user(c)
    first, second = await fragment(c, "f1"), await fragment(c, "f2")
    progress = await create(c, "NarrativeProgress", user_id=made.id, current_fragment_id=first.id)
    move = updating(
        c,
        "NarrativeProgress",
        "narrative_progress",
        id=progress.id,
        etag=progress.etag,
        current_fragment_id=second.id,
        choices_made=struct(f1="left"),
    )
    visit = c.message(
        "IncrementNarrativeProgressCountersRequest", id=progress.id, fragments_visited=1
    )

    await transact(
        c,
        call(c, "NarrativeProgressService/UpdateNarrativeProgress", move),
        call(c, "NarrativeProgressService/IncrementNarrativeProgressCounters", visit),
    )

    (now,) = await listed(c, "NarrativeProgress", filter=f'user_id = "{made.id}"')
    assert (now.current_fragment_id, now.fragments_visited) == (second.id, 1)
    assert ids(await listed(c, "NarrativeProgress", filter='choices_made.f1 = "left"')) == [
        progress.id
    ]


async def test_unlock_a_lore_piece_once(c: Client) -> None:
    made = await bot_user(c)
    piece = await create(c, "LorePiece", code="l1", title="Origins", rarity="RARITY_EPIC")
    await create(c, "LorePiece", code="l2", title="Common tale")
    unlocked = await create(c, "UserLorePiece", user_id=made.id, lore_piece_id=piece.id)

    again = await fails(create(c, "UserLorePiece", user_id=made.id, lore_piece_id=piece.id))

    assert again.code == ALREADY_EXISTS
    assert ids(await listed(c, "UserLorePiece", filter=f'user_id = "{made.id}"')) == [unlocked.id]
    assert ids(await listed(c, "LorePiece", filter='rarity = "epic"')) == [piece.id]


# ---------------------------------------------------------------- Achievement aggregate


async def test_grant_an_achievement_once_with_its_points(c: Client) -> None:
    made = await bot_user(c)
    first = await create(c, "Achievement", code="first", name="First steps", points_reward=15)
    await create(c, "Achievement", code="secret", name="?", is_hidden=True)
    award = creating(
        c, "UserAchievement", "user_achievement", user_id=made.id, achievement_id=first.id
    )

    def grant() -> list[Any]:
        return [
            call(c, "UserAchievementService/CreateUserAchievement", award),
            *add_points(c, made.id, first.points_reward, "achievement"),
        ]

    await transact(c, *grant())
    again = await fails(transact(c, *grant()))

    assert again.code == ALREADY_EXISTS
    assert await balance(c, made.id) == 15  # the refused grant gave nothing
    has = f'user_id = "{made.id}" AND achievement_id = "{first.id}"'
    assert await counted(c, "UserAchievement", has) == 1
    assert ids(await listed(c, "Achievement", filter="is_hidden = false")) == [first.id]


async def test_a_users_badges(c: Client) -> None:
    made, other = await bot_user(c), await bot_user(c)
    badges = [
        await create(c, "Badge", code=f"b{i}", name=f"b{i}", rarity=rarity)
        for i, rarity in enumerate(("RARITY_RARE", "RARITY_COMMON", "RARITY_RARE"))
    ]
    held = [await create(c, "UserBadge", user_id=made.id, badge_id=b.id) for b in badges[:2]]
    await create(c, "UserBadge", user_id=other.id, badge_id=badges[2].id)

    mine = await listed(c, "UserBadge", filter=f'user_id = "{made.id}"', order_by="create_time")
    assert ids(mine) == ids(held)
    rare = await listed(c, "Badge", filter='rarity = "rare"')
    assert sorted(ids(rare)) == sorted([badges[0].id, badges[2].id])


# ---------------------------------------------------------------- Channel aggregate


async def test_channel_by_chat_id_type_and_settings(c: Client) -> None:
    vip = await channel(c, channel_type="CHANNEL_TYPE_VIP", settings=struct(auto_approve=True))
    await channel(c, channel_type="CHANNEL_TYPE_VIP", is_active=False)
    free = await channel(c, settings=struct(auto_approve=False, wait_minutes=5))

    found = await listed(c, "Channel", filter=f"telegram_chat_id = {vip.telegram_chat_id}")
    assert ids(found) == [vip.id]
    active_vip = await listed(c, "Channel", filter='channel_type = "vip" AND is_active = true')
    assert ids(active_vip) == [vip.id]
    assert ids(await listed(c, "Channel", filter="settings.auto_approve = true")) == [vip.id]
    assert ids(await listed(c, "Channel", filter="settings.wait_minutes = 5")) == [free.id]


async def test_pending_requests_oldest_first_and_an_approval(c: Client) -> None:
    made, elsewhere = await channel(c), await channel(c)
    users = [await bot_user(c) for _ in range(3)]
    asked = [await create(c, "ChannelRequest", channel_id=made.id, user_id=u.id) for u in users]
    await create(c, "ChannelRequest", channel_id=elsewhere.id, user_id=users[0].id)
    pending = f'channel_id = "{made.id}" AND status = "pending"'
    approve = updating(
        c,
        "ChannelRequest",
        "channel_request",
        id=asked[1].id,
        etag=asked[1].etag,
        status=APPROVED,
        decided_time=at(1_800_000_000),
    )
    join = creating(c, "ChannelMember", "channel_member", channel_id=made.id, user_id=users[1].id)

    await transact(
        c,
        call(c, "ChannelRequestService/UpdateChannelRequest", approve),
        call(c, "ChannelMemberService/CreateChannelMember", join),
    )

    waiting = await listed(c, "ChannelRequest", filter=pending, order_by="create_time")
    assert ids(waiting) == [asked[0].id, asked[2].id]
    members = await listed(c, "ChannelMember", filter=f'channel_id = "{made.id}"')
    assert [m.user_id for m in members] == [users[1].id]


async def test_expiring_memberships(c: Client) -> None:
    made = await channel(c)
    ends = [at(1_800_000_000), at(1_900_000_000), None]
    members = []
    for end in ends:
        fields = {"expire_time": end} if end is not None else {}
        member = await create(
            c, "ChannelMember", channel_id=made.id, user_id=(await bot_user(c)).id, **fields
        )
        members.append(member)
    cutoff = at(1_850_000_000)

    expiring = await listed(
        c, "ChannelMember", filter=f'channel_id = "{made.id}" AND expire_time < {when(cutoff)}'
    )
    forever = await listed(c, "ChannelMember", filter="expire_time = null")

    assert ids(expiring) == [members[0].id]
    assert ids(forever) == [members[2].id]
