"""The site-builder pack (schemas/site_builder) as its tests use it: where it is, its
extension, and the sessions, sites, versions, audits, deployments and preferences most
tests make."""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from repogate.v1 import session_pb2
from tests.declared import Client
from tests.e2e.domain import Stubs, new_session, new_user
from tests.e2e.packs.support import PACKS, mask

PACK = PACKS / "site_builder"
PACKAGE = "site_builder.v1"
EXTENSIONS = str(PACK / "extensions.py")  # by file path, as the pack's README serves it
NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT
COUNT_MODE_EXACT = 2


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
    """UpsertPreferences of the session's preferences, masked by `paths` when given."""
    preferences = c.message("Preferences", session_id=session_id, **fields)
    request: dict[str, Any] = {"preferences": preferences}
    if paths:
        request["update_mask"] = mask(*paths)
    return await c("PreferencesService/UpsertPreferences", **request)
