"""Read-your-writes across read replicas: consistency tokens (docs/replicas.md).

A write that commits answers `x-consistency-token` in its trailing metadata: the
commit's position in PostgreSQL's write-ahead log (an LSN), bound to the tenant and
signed. A read that sends it back is served only where that position has been
replayed (a replica that has caught up, else the primary). A token is
`b64url(lsn).b64url(mac)`: the LSN as 8 bytes, and HMAC-SHA256 over it and the
tenant, cut to 16 bytes, under a key derived from the secret every process of a
fleet shares (REPOGATE_PAGE_TOKEN_SECRET), as transaction ids are: any process of
the fleet reads any process's tokens, and a client can neither forge a position
ahead of the primary (its reads would then all go there) nor edit one.

Tokens are made and read only when replicas are configured: the interceptor below
is installed then, and without it no write asks for its position.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import math
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from grpc import aio

from repositories import b64url
from repositories.errors import InvalidArgument
from server import context
from server.wrapping import Behaviour, BehaviourInterceptor

KEY = "x-consistency-token"
# Its own key: HMAC of the shared secret over this label, so that neither page tokens
# nor transaction ids (signed under other labels) can stand in for a token.
_LABEL = b"repogate/consistency-token/v1"
_MAC_BYTES = 16
_LSN_BYTES = 8


class Tokens:
    """Mints and verifies consistency tokens with the fleet's shared secret."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()

    def mint(self, position: int, tenant: str) -> str:
        body = position.to_bytes(_LSN_BYTES, "big")
        return f"{b64url.encode(body)}.{b64url.encode(self._mac(body, tenant))}"

    def position(self, token: str, tenant: str) -> int:
        """The LSN `token` carries; INVALID_ARGUMENT (AIP-193) unless this fleet minted
        it for `tenant`."""
        body_text, _, mac_text = token.partition(".")
        try:
            body, mac = b64url.decode(body_text), b64url.decode(mac_text)
        except (ValueError, binascii.Error):
            body, mac = b"", b""
        if len(body) != _LSN_BYTES or not hmac.compare_digest(mac, self._mac(body, tenant)):
            raise InvalidArgument.field(
                KEY,
                "is not a token a write of this tenant was answered with",
                reason="INVALID_CONSISTENCY_TOKEN",
            )
        return int.from_bytes(body, "big")

    def _mac(self, body: bytes, tenant: str) -> bytes:
        return hmac.new(self._key, body + b"\x00" + tenant.encode(), hashlib.sha256).digest()[
            :_MAC_BYTES
        ]


@dataclass(slots=True)
class Session:
    """One call's consistency: what it asked for and what it did. Mutable, and shared by
    the tasks the call's work runs in (each copies the context, not this object)."""

    # The LSN the call's reads must see; None: the call sent no token.
    at_least: int | None = None
    # The LSN its write committed at; None: it committed nothing (yet).
    committed: int | None = None
    # time.monotonic() of the latest moment every write committed before which its last
    # read saw (see server/replicas.py); inf: read on the primary, which sees them all.
    complete_as_of: float = math.inf
    # Whether its last read was served by a replica: it then proved nothing about the
    # primary, whose breaker it passed.
    on_replica: bool = False


_current: ContextVar[Session | None] = ContextVar("repogate_consistency", default=None)


def current() -> Session | None:
    """The call's session; None when replicas are not configured."""
    return _current.get()


def bind(session: Session) -> object:
    """Makes `session` the current call's; `unbind` with what this returns."""
    return _current.set(session)


def unbind(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def wrote(position: int) -> None:
    """The call's write committed at `position`: its answer carries a token for it."""
    session = _current.get()
    if session is not None:
        session.committed = max(position, session.committed or 0)


class Interceptor(BehaviourInterceptor):
    """Reads the token a call sends, and answers one when the call committed a write.
    Sits inside the request interceptor, which turns a refused token into its status."""

    def __init__(self, tokens: Tokens) -> None:
        super().__init__()
        self._tokens = tokens

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        tokens = self._tokens

        async def run(request: Any, ctx: aio.ServicerContext) -> Any:
            session = Session()
            raw = _sent(ctx)
            if raw is not None:
                session.at_least = tokens.position(raw, context.tenant())
            reset = bind(session)
            try:
                answer = await behaviour(request, ctx)
            finally:
                unbind(reset)
            if session.committed is not None:
                ctx.set_trailing_metadata(
                    ((KEY, tokens.mint(session.committed, context.tenant())),)
                )
            return answer

        return run


def _sent(ctx: aio.ServicerContext) -> str | None:
    for key, value in ctx.invocation_metadata() or ():
        if key == KEY and isinstance(value, str):
            return value
    return None
