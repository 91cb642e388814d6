"""The site-builder pack (schemas/site_builder, seed 000) end to end, on SQLite and
PostgreSQL: each method of the seed's SiteRepository (sites, their numbered versions,
audits and deployments, the cascading delete) answered over gRPC as
schemas/site_builder/README.md maps it, with the rows, counts and orders the seed
promised. The sessions: test_site_builder_sessions.py; the preferences:
test_site_builder_preferences.py; a site with its relations in one call:
test_site_builder_related.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.declared import Client
from tests.e2e.domain import Stubs, plain, struct
from tests.e2e.packs import sites
from tests.e2e.packs.sites import (
    INVALID,
    NOT_FOUND,
    audit,
    deployment,
    session,
    site,
    version,
)
from tests.e2e.packs.support import call, listed, mask, transact, unpacked
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

PACK, EXTENSIONS = sites.PACK, sites.EXTENSIONS  # what the pack_server fixture serves
PACKAGE = sites.PACKAGE  # the client fixture's


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
