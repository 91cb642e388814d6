"""TenantScope builds every statement with the tenant in it, and marks it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from repositories.scope import ScopeViolation, TenantScope
from repositories.tables import users

pytestmark = pytest.mark.unit


def _params(stmt: Any) -> dict[str, Any]:
    return dict(stmt.compile(dialect=postgresql.dialect()).params)


def test_a_scope_needs_a_tenant() -> None:
    with pytest.raises(ScopeViolation):
        TenantScope(users, "")


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()], ids=["pg", "sqlite"])
def test_select_update_delete_filter_on_the_tenant(dialect: Any) -> None:
    scope = TenantScope(users, "acme")
    for stmt in (
        scope.select(),
        scope.select(users.c.id),
        scope.update({"display_name": "x"}),
        scope.delete(),
    ):
        compiled = stmt.compile(dialect=dialect)
        assert "WHERE users.tenant_id = " in str(compiled)
        assert "acme" in compiled.params.values()


def test_insert_forces_the_tenant_on_every_row() -> None:
    scope = TenantScope(users, "acme")
    rows = [{"id": uuid.uuid4(), "username": name} for name in ("a", "b")]
    stmt = scope.insert([{**rows[0], "tenant_id": "evil"}, rows[1]])
    params = _params(stmt)
    tenants = [value for key, value in params.items() if key.startswith("tenant_id")]
    assert tenants == ["acme", "acme"]
    assert "evil" not in params.values()


@pytest.mark.parametrize("key", ["tenant_id", users.c.tenant_id], ids=["name", "column"])
def test_update_refuses_a_tenant_change(key: Any) -> None:
    scope = TenantScope(users, "acme")
    with pytest.raises(ScopeViolation):
        scope.update({key: "evil"})
    # Not even to the same tenant, and not hidden among other changes.
    with pytest.raises(ScopeViolation):
        scope.update({"display_name": "x", key: "acme"})


def test_check_accepts_only_this_scopes_statements() -> None:
    scope = TenantScope(users, "acme")
    refined = scope.select().where(users.c.username == "a").order_by(users.c.id).limit(3)
    for stmt in (scope.select(), refined, scope.update({"display_name": "x"}), scope.delete()):
        scope.check(stmt)

    twin = TenantScope(users, "acme")
    for stmt in (
        select(users),
        select(users).where(users.c.tenant_id == "acme"),
        twin.select(),
        TenantScope(users, "other").delete(),
    ):
        with pytest.raises(ScopeViolation):
            scope.check(stmt)
