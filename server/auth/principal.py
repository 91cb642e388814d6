"""Who a verified credential speaks for, and the rule for what it may call."""

from __future__ import annotations

from dataclasses import dataclass

from repositories.errors import InvalidArgument, PermissionDenied
from server.context import validate_tenant

ADMIN_SCOPE = "admin"
# The scopes a credential may carry; today only admin.
SCOPES = frozenset({ADMIN_SCOPE})
# As a credential's tenant: every tenant.
ALL_TENANTS = "*"
# Services whose every call needs the admin scope. A rule as data: guarding a new
# service is one more name here (or in the AuthInterceptor's `admin_only`).
ADMIN_ONLY: frozenset[str] = frozenset({"repogate.v1.AdminService"})


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller: the tenants it may act for, its scopes, and who it is for the
    access log (`key:<name in the keys file>`, `jwt:<sub claim>`)."""

    tenants: frozenset[str]
    scopes: frozenset[str] = frozenset()
    name: str | None = None

    def may_act_for(self, tenant: str) -> bool:
        return ALL_TENANTS in self.tenants or tenant in self.tenants


def authorize(principal: Principal, tenant: str | None, needs_admin: bool) -> None:
    """PERMISSION_DENIED unless `principal` may call, for `tenant` when the call names one."""
    if needs_admin and ADMIN_SCOPE not in principal.scopes:
        raise PermissionDenied(
            "this service needs a credential with the admin scope",
            reason="ADMIN_SCOPE_REQUIRED",
            metadata={"scope": ADMIN_SCOPE},
        )
    if tenant and not principal.may_act_for(tenant):
        raise PermissionDenied(
            f"this credential may not act for tenant {tenant!r}", reason="TENANT_NOT_ALLOWED"
        )


def parse_tenants(value: object, *, allow_any: bool = True) -> frozenset[str]:
    """A list of tenant ids, or "*" (alone or in the list) for every tenant; else ValueError.
    "*" is a ValueError too unless `allow_any` (REPOGATE_AUTH_ALLOW_ANY_TENANT)."""
    if value == ALL_TENANTS:
        value = [ALL_TENANTS]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError('tenants must be a list of tenant ids, or "*"')
    if ALL_TENANTS in value and not allow_any:
        raise ValueError(
            '"*" (every tenant) is not allowed here: REPOGATE_AUTH_ALLOW_ANY_TENANT is false'
        )
    for tenant in value:
        if tenant != ALL_TENANTS:
            try:
                validate_tenant(tenant)
            except InvalidArgument as exc:
                raise ValueError(f"tenant {tenant!r}: {exc.violations[0].description}") from exc
    return frozenset(value)


def parse_scopes(value: object) -> frozenset[str]:
    """OAuth's space-separated string, or a list; anything else grants no scope."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()
