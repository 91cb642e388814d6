"""TenantScope builds every statement with the tenant in it, and marks it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from repositories.scope import TENANT_PARAM, ScopeViolation, TenantScope
from repositories.tables import sessions, users

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
        # The tenant is a parameter only the executing scope fills in.
        assert compiled.construct_params(scope.bind(stmt, None))[TENANT_PARAM] == "acme"


def test_bind_puts_the_scopes_tenant_over_any_other() -> None:
    scope = TenantScope(users, "acme")
    stmt = scope.select()
    assert scope.bind(stmt, None) == {TENANT_PARAM: "acme"}
    assert scope.bind(stmt, {TENANT_PARAM: "evil", "x": 1}) == {TENANT_PARAM: "acme", "x": 1}
    many = scope.bind(scope.update({"display_name": "x"}), [{TENANT_PARAM: "evil"}, {}])
    assert many == [{TENANT_PARAM: "acme"}, {TENANT_PARAM: "acme"}]


def test_statements_are_shared_by_scopes_of_a_table_and_filter_by_the_executing_one() -> None:
    acme, other = TenantScope(users, "acme"), TenantScope(users, "other")
    assert acme.select() is other.select()
    assert acme.select_by_id() is other.select_by_id()
    assert other.bind(acme.select(), None) == {TENANT_PARAM: "other"}


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


def test_check_accepts_only_statements_scoped_to_this_table() -> None:
    scope = TenantScope(users, "acme")
    refined = scope.select().where(users.c.username == "a").order_by(users.c.id).limit(3)
    for stmt in (scope.select(), refined, scope.update({"display_name": "x"}), scope.delete()):
        scope.check(stmt)

    for stmt in (
        select(users),
        select(users).where(users.c.tenant_id == "acme"),
        TenantScope(sessions, "acme").select(),
    ):
        with pytest.raises(ScopeViolation):
            scope.check(stmt)


def test_around_marks_a_select_over_scoped_subqueries_only() -> None:
    scope = TenantScope(users, "acme")
    inner = scope.select(users.c.id)
    ranked = inner.subquery()

    outer = scope.around(select(ranked.c.id), inner)

    scope.check(outer)
    assert "WHERE users.tenant_id = " in str(outer.compile(dialect=postgresql.dialect()))
    with pytest.raises(ScopeViolation):
        scope.around(select(users.c.id).where(users.c.id.in_(select(ranked.c.id))), inner)
    with pytest.raises(ScopeViolation):
        scope.around(select(ranked.c.id), select(users.c.id))
    with pytest.raises(ScopeViolation):
        TenantScope(sessions, "acme").around(select(ranked.c.id), inner)


@pytest.mark.parametrize(
    "reads_the_table",
    [
        lambda ranked: select(ranked.c.id).where(users.c.display_name == "x"),
        lambda ranked: select(ranked.c.id).join_from(ranked, users, ranked.c.id == users.c.id),
        lambda ranked: select(ranked.c.id).where(
            ranked.c.id.in_(select(users.c.id).where(users.c.display_name == "x"))
        ),
        lambda ranked: select(ranked.c.id).order_by(users.c.display_name),
    ],
    ids=["where", "join", "subquery", "order_by"],
)
def test_around_refuses_the_table_read_anywhere_outside_the_scoped_select(
    reads_the_table: Any,
) -> None:
    scope = TenantScope(users, "acme")
    inner = scope.select(users.c.id)

    with pytest.raises(ScopeViolation, match="must not read the table itself"):
        scope.around(reads_the_table(inner.subquery()), inner)
