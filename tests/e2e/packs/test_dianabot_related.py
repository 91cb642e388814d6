"""The DianaBot pack (seed 004): `get_user_profile`'s parts (the user, its profile,
statistics and badges) in one call, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.conftest import Running
from tests.declared import Client, ids
from tests.e2e.packs import diana
from tests.e2e.packs.diana import PACKAGE, bot_user
from tests.e2e.packs.support import create

pytestmark = pytest.mark.e2e
PACK, EXTENSIONS = diana.PACK, diana.EXTENSIONS  # what the pack_server fixture serves


@pytest.fixture
def c(pack_server: Running) -> Client:
    return Client(pack_server.channel, schema=PACK, package=PACKAGE)


async def test_get_user_profile_in_one_call(c: Client) -> None:
    made, other = await bot_user(c, 40), await bot_user(c)
    profile = await create(c, "UserProfile", user_id=made.id, archetype="romantic")
    stats = await create(c, "UserStatistics", user_id=made.id, login_streak=3)
    badges = [await create(c, "Badge", code=code, name=code) for code in ("early", "late")]
    held = [await create(c, "UserBadge", user_id=made.id, badge_id=b.id) for b in badges]
    await create(c, "UserProfile", user_id=other.id, archetype="stoic")
    parts = ["user_profiles", "user_statistics", "user_badges"]

    got = await c("UserService/GetUser", id=made.id, expand=parts)
    alone = await c("UserService/GetUser", id=other.id, expand=parts)

    assert got.points == 40
    assert list(got.user_profiles) == [profile]
    assert list(got.user_statistics) == [stats]
    assert ids(got.user_badges) == ids(held)
    assert not got.more_user_badges
    assert [p.archetype for p in alone.user_profiles] == ["stoic"]
    assert not alone.user_statistics
    assert not alone.user_badges
