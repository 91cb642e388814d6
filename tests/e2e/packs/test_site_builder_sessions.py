"""The site-builder pack (schemas/site_builder, seed 000) end to end, on SQLite and
PostgreSQL: each method of the seed's SessionRepository, served by Repogate's own
`repogate.v1.SessionService` as schemas/site_builder/README.md maps it. The sites:
test_site_builder_sites.py; the preferences: test_site_builder_preferences.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from repogate.v1 import session_pb2
from tests.declared import Client
from tests.e2e.domain import Stubs, new_session, new_user, plain, struct
from tests.e2e.packs import sites
from tests.e2e.packs.sites import INVALID, NOT_FOUND, session
from tests.e2e.packs.support import mask
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

PACK, EXTENSIONS = sites.PACK, sites.EXTENSIONS  # what the pack_server fixture serves
PACKAGE = sites.PACKAGE  # the client fixture's


async def test_session_create_with_preferences(stubs: Stubs, client: Client) -> None:
    created = await session(stubs, client, preferences=struct({"theme": "dark", "language": "en"}))

    assert plain(created.preferences) == {"theme": "dark", "language": "en"}
    assert created.last_access_time == created.create_time


async def test_session_get_by_id_touches_last_access_time(stubs: Stubs, client: Client) -> None:
    created = await session(stubs, client)

    touched = await stubs.sessions.TouchSession(
        session_pb2.TouchSessionRequest(id=created.id), metadata=md(client.tenant)
    )

    assert touched.id == created.id
    assert touched.user_id == created.user_id
    assert touched.last_access_time.ToDatetime() > created.last_access_time.ToDatetime()
    read = await stubs.sessions.GetSession(
        session_pb2.GetSessionRequest(id=created.id), metadata=md(client.tenant)
    )
    assert read.last_access_time == touched.last_access_time
    other = client.as_tenant(client.tenant + "-other")
    error = await fails(
        stubs.sessions.TouchSession(
            session_pb2.TouchSessionRequest(id=created.id), metadata=md(other.tenant)
        )
    )
    assert error.code == NOT_FOUND


async def test_session_update_preferences(stubs: Stubs, client: Client) -> None:
    created = await session(stubs, client, preferences=struct({"theme": "dark", "language": "en"}))
    change = session_pb2.Session(
        id=created.id, preferences=struct({"theme": "light", "language": "es"})
    )

    updated = await stubs.sessions.UpdateSession(
        session_pb2.UpdateSessionRequest(session=change, update_mask=mask("preferences")),
        metadata=md(client.tenant),
    )

    assert plain(updated.preferences) == {"theme": "light", "language": "es"}


async def update_keys(
    stubs: Stubs, c: Client, session_id: str, preferences: dict[str, Any], *paths: str
) -> session_pb2.Session:
    """UpdateSession of the keys `paths` of the session's preferences, to `preferences`'."""
    change = session_pb2.Session(id=session_id, preferences=struct(preferences))
    return await stubs.sessions.UpdateSession(
        session_pb2.UpdateSessionRequest(session=change, update_mask=mask(*paths)),
        metadata=md(c.tenant),
    )


async def test_session_update_one_preference_keeps_the_others(stubs: Stubs, client: Client) -> None:
    stored = {"theme": "dark", "language": "en", "layout": {"grid": 12, "sidebar": "left"}}
    created = await session(stubs, client, preferences=struct(stored))

    themed = await update_keys(stubs, client, created.id, {"theme": "light"}, "preferences.theme")
    nested = await update_keys(
        stubs, client, created.id, {"layout": {"grid": 16}}, "preferences.layout.grid"
    )
    # A path the request's Struct lacks removes the key.
    removed = await update_keys(stubs, client, created.id, {}, "preferences.language")

    assert plain(themed.preferences) == {**stored, "theme": "light"}
    assert plain(nested.preferences) == {
        **stored,
        "theme": "light",
        "layout": {**stored["layout"], "grid": 16},
    }
    expected = {key: value for key, value in plain(nested.preferences).items() if key != "language"}
    assert plain(removed.preferences) == expected
    assert [int(s.etag) for s in (created, themed, nested, removed)] == [1, 2, 3, 4]
    read = await stubs.sessions.GetSession(
        session_pb2.GetSessionRequest(id=created.id), metadata=md(client.tenant)
    )
    assert read == removed


async def test_session_updates_of_two_preferences_at_once_both_land(
    stubs: Stubs, client: Client
) -> None:
    created = await session(stubs, client, preferences=struct({"theme": "dark", "language": "en"}))

    await asyncio.gather(
        update_keys(stubs, client, created.id, {"theme": "light"}, "preferences.theme"),
        update_keys(stubs, client, created.id, {"language": "es"}, "preferences.language"),
    )

    read = await stubs.sessions.GetSession(
        session_pb2.GetSessionRequest(id=created.id), metadata=md(client.tenant)
    )
    assert plain(read.preferences) == {"theme": "light", "language": "es"}
    assert read.etag == "3"


@pytest.mark.parametrize(
    "paths",
    [
        ("preferences", "preferences.theme"),  # which of the two decides?
        ("preferences.theme", "preferences.theme.dark"),
        ("preference.theme",),  # no such field
        ("user_id.theme",),  # not a Struct
        ("preferences.",),  # malformed
    ],
)
async def test_session_update_of_a_bad_preference_path_is_refused(
    stubs: Stubs, client: Client, paths: tuple[str, ...]
) -> None:
    created = await session(stubs, client, preferences=struct({"theme": "dark"}))

    error = await fails(update_keys(stubs, client, created.id, {"theme": "light"}, *paths))

    assert (error.code, list(error.violations)) == (INVALID, ["update_mask"])
    read = await stubs.sessions.GetSession(
        session_pb2.GetSessionRequest(id=created.id), metadata=md(client.tenant)
    )
    assert read == created


async def test_session_update_of_another_tenants_preference_is_not_found(
    stubs: Stubs, client: Client
) -> None:
    created = await session(stubs, client, preferences=struct({"theme": "dark"}))
    other = client.as_tenant(client.tenant + "-other")

    error = await fails(
        update_keys(stubs, other, created.id, {"theme": "light"}, "preferences.theme")
    )

    assert error.code == NOT_FOUND
    read = await stubs.sessions.GetSession(
        session_pb2.GetSessionRequest(id=created.id), metadata=md(client.tenant)
    )
    assert plain(read.preferences) == {"theme": "dark"}


async def test_session_get_by_user_id_get_all_and_count(stubs: Stubs, client: Client) -> None:
    tenant = client.tenant
    ann = await new_user(stubs, tenant, "ann")
    bob = await new_user(stubs, tenant, "bob")
    owners = [ann.id, bob.id, ann.id, ann.id, bob.id]
    created = [await new_session(stubs, tenant, owner) for owner in owners]

    mine = await stubs.sessions.ListSessions(
        session_pb2.ListSessionsRequest(filter=f'user_id = "{ann.id}"'), metadata=md(tenant)
    )
    assert [s.id for s in mine.sessions] == [s.id for s in created if s.user_id == ann.id]
    # get_all(limit=2, offset=1): the default order is the create order.
    page = await stubs.sessions.ListSessions(
        session_pb2.ListSessionsRequest(page_size=2, skip=1), metadata=md(tenant)
    )
    assert [s.id for s in page.sessions] == [s.id for s in created[1:3]]
    count = await stubs.sessions.CountSessions(
        session_pb2.CountSessionsRequest(), metadata=md(tenant)
    )
    assert count.total_size == len(created)


async def test_session_cleanup_old_sessions(stubs: Stubs, client: Client) -> None:
    old = [await session(stubs, client) for _ in range(3)]
    # The cutoff is the server's time of a write ("90 days ago" in the seed's terms).
    kept = await session(stubs, client)
    cutoff = kept.last_access_time

    purged = await stubs.sessions.PurgeSessions(
        session_pb2.PurgeSessionsRequest(cutoff_time=cutoff), metadata=md(client.tenant)
    )

    assert purged.purged_count == len(old)
    left = await stubs.sessions.ListSessions(
        session_pb2.ListSessionsRequest(), metadata=md(client.tenant)
    )
    assert [s.id for s in left.sessions] == [kept.id]


async def test_session_delete(stubs: Stubs, client: Client) -> None:
    created = await session(stubs, client)

    deleted = await stubs.sessions.DeleteSession(
        session_pb2.DeleteSessionRequest(id=created.id), metadata=md(client.tenant)
    )

    assert deleted.HasField("delete_time")
    count = await stubs.sessions.CountSessions(
        session_pb2.CountSessionsRequest(), metadata=md(client.tenant)
    )
    assert count.total_size == 0
