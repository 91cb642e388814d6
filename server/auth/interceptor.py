"""The authentication interceptor: no verified credential for the call's tenant, no call.

It is listed after the RequestInterceptor, so it runs inside it: the request
context is bound and the tenant checked, and what it raises becomes an AIP-193
status there, with the call's request id, and shows in the access log.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from grpc import aio

from server import context
from server.auth.credentials import Authenticator
from server.auth.principal import ADMIN_ONLY, authorize
from server.interceptors import service_of
from server.wrapping import Behaviour, BehaviourInterceptor


class AuthInterceptor(BehaviourInterceptor):
    """Guards Repogate's own services; health and reflection stay open."""

    # A streaming method would run unguarded: it is not served (UNIMPLEMENTED) at all.
    refuses_streaming = True

    def __init__(
        self,
        authenticator: Authenticator,
        admin_only: Collection[str] = ADMIN_ONLY,
    ) -> None:
        super().__init__()
        self._authenticator = authenticator
        self._admin_only = frozenset(admin_only)

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        needs_admin = service_of(method) in self._admin_only
        return _guarded(behaviour, self._authenticator, needs_admin)


def _guarded(behaviour: Behaviour, authenticator: Authenticator, needs_admin: bool) -> Behaviour:
    async def run(request: Any, ctx: aio.ServicerContext) -> Any:
        principal = await authenticator.authenticate(ctx.invocation_metadata() or ())
        context.note_caller(principal.name)
        # context.current() fails (INTERNAL) if the RequestInterceptor is not around us.
        authorize(principal, context.current().tenant, needs_admin)
        return await behaviour(request, ctx)

    return run
