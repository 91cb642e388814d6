"""The site-builder pack (schemas/site_builder, seed 000) end to end, on SQLite and
PostgreSQL: each method of the seed's PreferencesRepository (UpsertPreferences, the
pack's extension, for its update-or-create), and several repositories in one
transaction, as schemas/site_builder/README.md maps them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest

from repogate.v1 import session_pb2
from tests.declared import Client
from tests.e2e.domain import Stubs, new_user
from tests.e2e.packs import sites
from tests.e2e.packs.sites import (
    COUNT_MODE_EXACT,
    INVALID,
    NOT_FOUND,
    session,
    site,
    upsert,
    version,
)
from tests.e2e.packs.support import begin, commit, listed, rollback
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

PACK, EXTENSIONS = sites.PACK, sites.EXTENSIONS  # what the pack_server fixture serves
PACKAGE = sites.PACKAGE  # the client fixture's


# ------------------------------------------------------------ PreferencesRepository


async def test_preferences_create_and_get_by_session_id(stubs: Stubs, client: Client) -> None:
    first, second = await session(stubs, client), await session(stubs, client)
    fields = {
        "default_color_scheme": "blue",
        "default_site_type": "portfolio",
        "favorite_features": ["contact", "gallery"],
        "design_style": "modern",
    }
    created = await client(
        "PreferencesService/CreatePreferences",
        preferences=client.message("Preferences", session_id=first.id, **fields),
    )
    await client(
        "PreferencesService/CreatePreferences",
        preferences=client.message("Preferences", session_id=second.id),
    )

    found = await client("PreferencesService/ListPreferences", filter=f'session_id = "{first.id}"')

    assert list(found.preferences) == [created]
    assert list(created.favorite_features) == ["contact", "gallery"]
    again = client.message("Preferences", session_id=first.id)
    error = await fails(client("PreferencesService/CreatePreferences", preferences=again))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    gallery = await client(
        "PreferencesService/CountPreferences", filter='favorite_features:"gallery"'
    )
    assert gallery.total_size == 1


async def test_preferences_update_creates_then_updates(stubs: Stubs, client: Client) -> None:
    owner = await session(stubs, client)

    created = await upsert(
        client, owner.id, default_color_scheme="blue", favorite_features=["contact", "gallery"]
    )
    updated = await upsert(
        client,
        owner.id,
        "default_color_scheme",
        "favorite_features",
        default_color_scheme="green",
        favorite_features=["contact", "gallery", "blog"],
        design_style="ignored: not in the mask",
    )

    assert (created.default_color_scheme, created.design_style) == ("blue", "")
    assert updated.id == created.id
    assert updated.default_color_scheme == "green"
    assert list(updated.favorite_features) == ["contact", "gallery", "blog"]
    assert updated.design_style == ""
    count = await client("PreferencesService/CountPreferences", filter=f'session_id = "{owner.id}"')
    assert count.total_size == 1


async def test_preferences_update_without_a_mask_writes_the_fields_it_sets(
    stubs: Stubs, client: Client
) -> None:
    owner = await session(stubs, client)
    await upsert(client, owner.id, default_color_scheme="blue", design_style="modern")

    updated = await upsert(client, owner.id, design_style="retro")

    assert (updated.default_color_scheme, updated.design_style) == ("blue", "retro")


async def test_preferences_upserts_racing_for_one_session_make_one_row(
    stubs: Stubs, client: Client
) -> None:
    owners = [(await session(stubs, client)).id for _ in range(8)]
    styles = [f"style {n}" for n in range(5)]

    answers = await asyncio.gather(
        *(upsert(client, owner, design_style=s) for owner in owners for s in styles)
    )

    rows: dict[str, set[str]] = {owner: set() for owner in owners}
    for answer in answers:
        rows[answer.session_id].add(answer.id)
    assert all(len(ids) == 1 for ids in rows.values()), rows
    found = await listed(client, "Preferences")
    assert sorted(p.session_id for p in found) == sorted(owners)
    assert {p.design_style for p in found} <= set(styles)


async def test_preferences_upsert_retried_with_its_request_id_is_done_once(
    stubs: Stubs, client: Client
) -> None:
    owner = await session(stubs, client)
    key = str(uuid.uuid4())
    first = await client(
        "PreferencesService/UpsertPreferences",
        preferences=client.message("Preferences", session_id=owner.id, design_style="first"),
        request_id=key,
    )
    later = await upsert(client, owner.id, design_style="later")

    retried = await client(
        "PreferencesService/UpsertPreferences",
        preferences=client.message("Preferences", session_id=owner.id, design_style="first"),
        request_id=key,
    )

    assert retried == first
    assert await client("PreferencesService/GetPreferences", id=first.id) == later


async def test_preferences_upsert_stays_in_its_tenant(stubs: Stubs, client: Client) -> None:
    owner = await session(stubs, client)
    mine = await upsert(client, owner.id, design_style="mine")
    theirs = client.as_tenant(client.tenant + "-other")

    other = await upsert(theirs, owner.id, design_style="theirs")

    assert other.id != mine.id
    assert await client("PreferencesService/GetPreferences", id=mine.id) == mine
    error = await fails(theirs("PreferencesService/GetPreferences", id=mine.id))
    assert error.code == NOT_FOUND


@pytest.mark.parametrize(
    ("session_id", "fields", "paths", "field"),
    [
        ("", {}, (), "preferences.session_id"),
        ("not-a-uuid", {}, (), "preferences.session_id"),
        (None, {"design_style": "x" * 65}, (), "preferences.design_style"),
        (None, {"favorite_features": ["a", "a"]}, (), "preferences.favorite_features"),
        (None, {"design_style": "x"}, ("no_such_field",), "update_mask"),
    ],
)
async def test_preferences_upsert_refuses_bad_input(
    stubs: Stubs,
    client: Client,
    session_id: str | None,
    fields: dict[str, Any],
    paths: tuple[str, ...],
    field: str,
) -> None:
    owner = await session(stubs, client)
    existing = await upsert(client, owner.id, design_style="kept")
    key = owner.id if session_id is None else session_id

    error = await fails(upsert(client, key, *paths, **fields))

    assert (error.code, list(error.violations)) == (INVALID, [field])
    assert await client("PreferencesService/GetPreferences", id=existing.id) == existing
    assert (await client("PreferencesService/CountPreferences")).total_size == 1


async def test_preferences_get_all_with_limit_and_offset(stubs: Stubs, client: Client) -> None:
    created = [await upsert(client, (await session(stubs, client)).id) for _ in range(5)]

    page = await client(
        "PreferencesService/ListPreferences", page_size=2, skip=2, count_mode=COUNT_MODE_EXACT
    )

    assert list(page.preferences) == created[2:4]
    assert page.total_size == len(created)


async def test_preferences_delete_by_session_id(stubs: Stubs, client: Client) -> None:
    doomed, kept = await session(stubs, client), await session(stubs, client)
    for owner in (doomed, kept):
        await upsert(client, owner.id)

    found = await client("PreferencesService/ListPreferences", filter=f'session_id = "{doomed.id}"')
    await client("PreferencesService/DeletePreferences", id=found.preferences[0].id)

    left = await client("PreferencesService/ListPreferences")
    assert [p.session_id for p in left.preferences] == [kept.id]
    again = await upsert(client, doomed.id, design_style="new")
    assert again.id != found.preferences[0].id


# ------------------------------------------------------------ several repositories


@pytest.mark.parametrize("committed", [True, False])
async def test_session_preferences_site_and_version_in_one_transaction(
    stubs: Stubs, client: Client, committed: bool
) -> None:
    user = await new_user(stubs, client.tenant, f"u{uuid.uuid4().hex[:12]}")
    began = await begin(client)
    inside = client.inside(began)
    in_tx = md(client.tenant, x_transaction_id=began)

    owner = await stubs.sessions.CreateSession(
        session_pb2.CreateSessionRequest(session=session_pb2.Session(user_id=user.id)),
        metadata=in_tx,
    )
    await upsert(inside, owner.id, default_site_type="portfolio")
    created = await site(inside, owner.id, "My First Site")
    await version(inside, created.id, "<html>...</html>")
    await (commit if committed else rollback)(client, began)

    expected = 1 if committed else 0
    for method in (
        "PreferencesService/CountPreferences",
        "SiteService/CountSites",
        "SiteVersionService/CountSiteVersions",
    ):
        assert (await client(method)).total_size == expected, method
    sessions = await stubs.sessions.CountSessions(
        session_pb2.CountSessionsRequest(), metadata=md(client.tenant)
    )
    assert sessions.total_size == expected
