"""The site-builder pack (seed 000): `get_site_by_id` with its relationships (versions,
audits, deployments) in one call, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import Running
from tests.declared import Client, ids
from tests.e2e.domain import Stubs, new_session, new_user
from tests.e2e.packs import sites
from tests.e2e.packs.support import create, listed

pytestmark = pytest.mark.e2e

PACK, EXTENSIONS = sites.PACK, sites.EXTENSIONS  # what the pack_server fixture serves
PACKAGE = sites.PACKAGE  # the client fixture's
RELATIONS = ["site_versions", "audits", "deployments"]


@pytest.fixture
def client(pack_server: Running) -> Client:
    return Client(pack_server.channel, schema=PACK, package=sites.PACKAGE)


async def site(stubs: Stubs, c: Client, name: str) -> Any:
    user = await new_user(stubs, c.tenant, f"u{uuid.uuid4().hex[:12]}")
    owner = await new_session(stubs, c.tenant, user.id)
    return await create(c, "Site", session_id=owner.id, name=name)


async def test_get_site_by_id_with_its_relations_in_one_call(
    pack_server: Running, client: Client
) -> None:
    stubs = Stubs.on(pack_server.channel)
    mine, other = await site(stubs, client, "Mine"), await site(stubs, client, "Other")
    versions = [
        await create(client, "SiteVersion", site_id=mine.id, code=f"<p>{n}</p>") for n in range(3)
    ]
    for score in (70, 90):
        await create(client, "Audit", site_id=mine.id, score=score, version_id=versions[0].id)
    await create(client, "Deployment", site_id=mine.id, provider="vercel")
    for resource, fields in (
        ("SiteVersion", {"code": "x"}),
        ("Audit", {"score": 10}),
        ("Deployment", {}),
    ):
        await create(client, resource, site_id=other.id, **fields)

    got = await client("SiteService/GetSite", id=mine.id, expand=RELATIONS)
    page = await client("SiteService/ListSites", expand=RELATIONS, filter='name = "Mine"')

    by_site = f'site_id = "{mine.id}"'
    assert list(got.site_versions) == versions  # by number
    assert ids(got.audits) == ids(await listed(client, "Audit", filter=by_site))
    assert ids(got.deployments) == ids(await listed(client, "Deployment", filter=by_site))
    assert (len(got.audits), len(got.deployments)) == (2, 1)
    assert [got.more_site_versions, got.more_audits, got.more_deployments] == [False] * 3
    (listed_site,) = page.sites
    assert listed_site == got
