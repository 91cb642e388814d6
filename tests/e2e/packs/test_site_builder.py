"""The site-builder pack (schemas/site_builder), end to end on SQLite and PostgreSQL: each
method of the seed's SessionRepository, SiteRepository and PreferencesRepository answered
over gRPC as schemas/site_builder/README.md maps it, with the rows, counts and orders the
seed promised."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest

from repogate.v1 import session_pb2
from tests.conftest import Running
from tests.declared import Client
from tests.e2e.domain import Stubs, new_session, new_user, plain, struct
from tests.e2e.packs.support import (
    PACKS,
    begin,
    call,
    commit,
    listed,
    mask,
    rollback,
    transact,
    unpacked,
)
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

PACK = PACKS / "site_builder"
EXTENSIONS = str(PACK / "extensions.py")  # by file path, as the pack's README serves it
NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT
COUNT_MODE_EXACT = 2


@pytest.fixture
def client(pack_server: Running) -> Client:
    return Client(pack_server.channel, schema=PACK, package="site_builder.v1")


@pytest.fixture
def stubs(pack_server: Running) -> Stubs:
    return Stubs.on(pack_server.channel)


async def session(stubs: Stubs, c: Client, **fields: Any) -> session_pb2.Session:
    """A repogate.v1.Session of the client's tenant (with a user of its own)."""
    user = await new_user(stubs, c.tenant, f"u{uuid.uuid4().hex[:12]}")
    return await new_session(stubs, c.tenant, user.id, **fields)


async def site(c: Client, session_id: str, name: str = "My Portfolio") -> Any:
    return await c(
        "SiteService/CreateSite", site=c.message("Site", session_id=session_id, name=name)
    )


async def version(c: Client, site_id: str, code: str = "<html></html>", **fields: Any) -> Any:
    v = c.message("SiteVersion", site_id=site_id, code=code, **fields)
    return await c("SiteVersionService/CreateSiteVersion", site_version=v)


async def audit(c: Client, site_id: str, score: float, **fields: Any) -> Any:
    a = c.message("Audit", site_id=site_id, score=score, **fields)
    return await c("AuditService/CreateAudit", audit=a)


async def deployment(c: Client, site_id: str, **fields: Any) -> Any:
    d = c.message("Deployment", site_id=site_id, **fields)
    return await c("DeploymentService/CreateDeployment", deployment=d)


async def upsert(c: Client, session_id: str, *paths: str, **fields: Any) -> Any:
    preferences = c.message("Preferences", session_id=session_id, **fields)
    request: dict[str, Any] = {"preferences": preferences}
    if paths:
        request["update_mask"] = mask(*paths)
    return await c("PreferencesService/UpsertPreferences", **request)


# ------------------------------------------------------------ SessionRepository


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


# ------------------------------------------------------------ SiteRepository


async def test_create_site(stubs: Stubs, client: Client) -> None:
    owner = await session(stubs, client)

    created = await site(client, owner.id, "My Portfolio")

    assert (created.session_id, created.name) == (owner.id, "My Portfolio")
    assert await client("SiteService/GetSite", id=created.id) == created


@pytest.mark.parametrize(
    ("session_id", "name", "field"),
    [
        ("not-a-uuid", "x", "site.session_id"),
        ("", "x", "site.session_id"),
        (str(uuid.uuid4()).upper(), "x", "site.session_id"),
        (str(uuid.uuid4()), "", "site.name"),
    ],
)
async def test_create_site_refuses_bad_input(
    client: Client, session_id: str, name: str, field: str
) -> None:
    error = await fails(site(client, session_id, name))

    assert (error.code, list(error.violations)) == (INVALID, [field])
    assert (await client("SiteService/CountSites")).total_size == 0


async def test_get_site_by_id_with_its_relations_in_one_transact(
    stubs: Stubs, client: Client
) -> None:
    owner = await session(stubs, client)
    mine, other = await site(client, owner.id), await site(client, owner.id, "Other")
    versions = [await version(client, mine.id, f"<p>{n}</p>") for n in range(3)]
    audits = [await audit(client, mine.id, score, version_id=versions[0].id) for score in (70, 90)]
    deployments = [await deployment(client, mine.id, provider="vercel")]
    await version(client, other.id)
    await audit(client, other.id, 10)
    await deployment(client, other.id)
    by_site = f'site_id = "{mine.id}"'
    m = client.message
    calls = [
        call(client, "SiteService/GetSite", m("GetSiteRequest", id=mine.id)),
        call(
            client,
            "SiteVersionService/ListSiteVersions",
            m("ListSiteVersionsRequest", filter=by_site),
        ),
        call(client, "AuditService/ListAudits", m("ListAuditsRequest", filter=by_site)),
        call(
            client, "DeploymentService/ListDeployments", m("ListDeploymentsRequest", filter=by_site)
        ),
    ]

    answers = unpacked(calls, await transact(client, *calls))

    got_site, got_versions, got_audits, got_deployments = answers
    assert got_site == mine
    assert list(got_versions.site_versions) == versions
    assert list(got_audits.audits) == audits
    assert list(got_deployments.deployments) == deployments


async def test_get_sites_by_session(stubs: Stubs, client: Client) -> None:
    first, second = await session(stubs, client), await session(stubs, client)
    owners = [first.id, second.id, first.id, first.id]
    created = [await site(client, owner, f"site {n}") for n, owner in enumerate(owners)]
    theirs = client.as_tenant(client.tenant + "-other")
    await site(theirs, first.id, "same session id, other tenant")

    found = await listed(client, "Site", filter=f'session_id = "{first.id}"')

    assert found == [s for s in created if s.session_id == first.id]


async def test_update_site(stubs: Stubs, client: Client) -> None:
    created = await site(client, (await session(stubs, client)).id, "Old Name")
    change = client.message("Site", id=created.id, name="Updated Name")

    updated = await client("SiteService/UpdateSite", site=change, update_mask=mask("name"))

    assert (updated.name, updated.session_id) == ("Updated Name", created.session_id)
    assert (await client("SiteService/GetSite", id=created.id)).name == "Updated Name"
    moved = client.message("Site", id=created.id, session_id=str(uuid.uuid4()))
    error = await fails(
        client("SiteService/UpdateSite", site=moved, update_mask=mask("session_id"))
    )
    assert (error.code, list(error.violations)) == (INVALID, ["update_mask"])


async def test_create_version_numbers_them_per_site(stubs: Stubs, client: Client) -> None:
    owner = await session(stubs, client)
    mine, other = await site(client, owner.id), await site(client, owner.id)
    portfolio = {"type": "portfolio", "features": ["contact"]}
    blog = {"type": "blog", "features": []}
    plan = [(mine, portfolio), (mine, portfolio), (other, blog), (mine, portfolio)]

    created = [
        await version(
            client,
            s.id,
            code="<html>...</html>",
            requirements=struct(requirements),
            changes="Added contact form",
        )
        for s, requirements in plan
    ]

    assert [v.number for v in created] == [1, 2, 1, 3]
    assert [plain(v.requirements) for v in created] == [r for _, r in plan]
    assert not created[0].HasField("audit_score")
    for kind in ("portfolio", "blog", "shop"):
        expected = [v.id for v in created if plain(v.requirements)["type"] == kind]
        found = await listed(
            client,
            "SiteVersion",
            filter=f'requirements.type = "{kind}"',
        )
        assert sorted(v.id for v in found) == sorted(expected), kind


async def test_create_version_of_a_missing_or_other_tenants_site_is_not_found(
    stubs: Stubs, client: Client
) -> None:
    theirs = client.as_tenant(client.tenant + "-other")
    their_site = await site(theirs, str(uuid.uuid4()))

    for site_id in (their_site.id, str(uuid.uuid4())):
        error = await fails(version(client, site_id))
        assert error.code == NOT_FOUND
    assert (await client("SiteVersionService/CountSiteVersions")).total_size == 0


async def test_get_version_by_id(stubs: Stubs, client: Client) -> None:
    created = await version(client, (await site(client, (await session(stubs, client)).id)).id)

    assert await client("SiteVersionService/GetSiteVersion", id=created.id) == created
    theirs = client.as_tenant(client.tenant + "-other")
    error = await fails(theirs("SiteVersionService/GetSiteVersion", id=created.id))
    assert error.code == NOT_FOUND


async def test_get_versions_by_site_and_the_latest(stubs: Stubs, client: Client) -> None:
    owner = await session(stubs, client)
    mine, other = await site(client, owner.id), await site(client, owner.id)
    created = [await version(client, s.id, f"<p>{n}</p>") for n, s in enumerate([mine] * 4)]
    await version(client, other.id, "<p>other</p>")
    by_site = f'site_id = "{mine.id}"'

    versions = await listed(client, "SiteVersion", filter=by_site)
    latest = await client(
        "SiteVersionService/ListSiteVersions", filter=by_site, order_by="number desc", page_size=1
    )

    assert versions == created
    assert list(latest.site_versions) == [max(created, key=lambda v: v.number)]


async def test_update_version_audit_score(stubs: Stubs, client: Client) -> None:
    created = await version(client, (await site(client, (await session(stubs, client)).id)).id)
    change = client.message("SiteVersion", id=created.id, audit_score=85.5)

    updated = await client(
        "SiteVersionService/UpdateSiteVersion", site_version=change, update_mask=mask("audit_score")
    )

    assert updated.audit_score == 85.5
    assert updated.code == created.code
    scored = await client("SiteVersionService/CountSiteVersions", filter="audit_score >= 85")
    assert scored.total_size == 1
    change.audit_score = 120
    error = await fails(
        client(
            "SiteVersionService/UpdateSiteVersion",
            site_version=change,
            update_mask=mask("audit_score"),
        )
    )
    assert (error.code, list(error.violations)) == (INVALID, ["site_version.audit_score"])
    assert await client("SiteVersionService/GetSiteVersion", id=created.id) == updated


@pytest.mark.parametrize("resource", ["Audit", "Deployment"])
async def test_audits_and_deployments_by_site(stubs: Stubs, client: Client, resource: str) -> None:
    owner = await session(stubs, client)
    mine, other = await site(client, owner.id), await site(client, owner.id)
    first = await version(client, mine.id)

    async def make(site_id: str, n: int) -> Any:
        if resource == "Audit":
            return await audit(client, site_id, 10.0 * n, version_id=first.id)
        return await deployment(client, site_id, provider="vercel", url=f"https://s{n}.example")

    created = [await make(s.id, n) for n, s in enumerate([mine, other, mine, mine])]

    found = await listed(
        client, resource, filter=f'site_id = "{mine.id}"', order_by="create_time desc"
    )

    assert found == [item for item in reversed(created) if item.site_id == mine.id]


async def test_delete_site_cascades_to_versions_audits_and_deployments(
    stubs: Stubs, client: Client
) -> None:
    owner = await session(stubs, client)
    doomed, kept = await site(client, owner.id), await site(client, owner.id)
    for s in (doomed, kept):
        v = await version(client, s.id)
        await audit(client, s.id, 50, version_id=v.id)
        await deployment(client, s.id, version_id=v.id)

    await client("SiteService/DeleteSite", id=doomed.id, force=True)

    assert (await fails(client("SiteService/GetSite", id=doomed.id))).code == NOT_FOUND
    for service, plural in (
        ("SiteVersionService/CountSiteVersions", "site_versions"),
        ("AuditService/CountAudits", "audits"),
        ("DeploymentService/CountDeployments", "deployments"),
    ):
        for s, expected in ((doomed, 0), (kept, 1)):
            count = await client(service, filter=f'site_id = "{s.id}"', show_deleted=True)
            assert count.total_size == expected, (plural, s.name)


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
