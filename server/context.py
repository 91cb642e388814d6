"""Request-scoped values taken from gRPC metadata, held in a contextvar."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from repositories.errors import InvalidArgument
from repositories.tables import ACTOR_MAX, TENANT_ID_MAX, TRANSACTION_ID_MAX

TENANT_KEY = "x-tenant-id"
REQUEST_ID_KEY = "x-request-id"
ACTOR_KEY = "x-actor-id"
TRANSACTION_KEY = "x-transaction-id"
TRACEPARENT_KEY = "traceparent"
TRACESTATE_KEY = "tracestate"

_TENANT_RE = re.compile(r"[A-Za-z0-9._-]+")
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TRANSACTION_ID_RE = re.compile(rf"[A-Za-z0-9._-]{{1,{TRANSACTION_ID_MAX}}}")


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a call carries besides its message."""

    tenant: str | None
    request_id: str
    actor: str | None = None
    # Raw x-transaction-id; None when the call runs in a transaction of its own.
    transaction_id: str | None = None
    # time.monotonic() by which the caller wants an answer; None: no deadline.
    deadline: float | None = None
    # Raw W3C traceparent and tracestate: the caller's trace, which the call's span
    # joins (server/call_spans.py) and the access log names.
    traceparent: str | None = None
    tracestate: str | None = None

    def require_tenant(self) -> str:
        """The validated tenant; INVALID_ARGUMENT when it is missing or malformed."""
        return validate_tenant(self.tenant)


_current: ContextVar[RequestContext] = ContextVar("repogate_request")
# Who the call's credential speaks for, once authenticated (for the access log); set
# inside the request interceptor, read by it as the call ends, in the call's own task.
_caller: ContextVar[str | None] = ContextVar("repogate_caller", default=None)


def current() -> RequestContext:
    """The context of the call being served; set by the request interceptor."""
    return _current.get()


def tenant() -> str:
    return current().require_tenant()


def actor() -> str | None:
    """Who acts, for created_by/updated_by; None when the call does not say."""
    return validate_actor(current().actor)


def transaction_id() -> str | None:
    """The call's transaction, validated; None when it names none."""
    return validate_transaction_id(current().transaction_id)


def bind(ctx: RequestContext) -> object:
    return _current.set(ctx)


def unbind(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def note_caller(name: str | None) -> None:
    """Names the authenticated caller of the call being served (None as a call starts:
    TransactionService rebinds the context within a call, so bind() leaves it be)."""
    _caller.set(name)


def caller() -> str | None:
    """The authenticated caller of the call being served; None when there is none."""
    return _caller.get()


def bound() -> RequestContext | None:
    """The context of the call being served, None outside one (the server's own log)."""
    return _current.get(None)


def from_metadata(
    metadata: Iterable[tuple[str, str | bytes]], deadline: float | None = None
) -> RequestContext:
    """Picks out the keys Repogate reads (the first of each); never fails (values are
    checked on use)."""
    values: dict[str, str] = {}
    for key, value in metadata:
        if key in _KEYS and key not in values and isinstance(value, str):
            values[key] = value
    request_id = values.get(REQUEST_ID_KEY)
    if request_id is None or not _REQUEST_ID_RE.fullmatch(request_id):
        # 128 random bits as 32 hex digits: uuid.uuid4().hex's form at a fifth of its cost.
        request_id = os.urandom(16).hex()
    return RequestContext(
        tenant=values.get(TENANT_KEY),
        request_id=request_id,
        actor=values.get(ACTOR_KEY),
        transaction_id=values.get(TRANSACTION_KEY),
        deadline=deadline,
        traceparent=values.get(TRACEPARENT_KEY),
        tracestate=values.get(TRACESTATE_KEY),
    )


_KEYS = frozenset(
    (TENANT_KEY, REQUEST_ID_KEY, ACTOR_KEY, TRANSACTION_KEY, TRACEPARENT_KEY, TRACESTATE_KEY)
)


# Every call checks its tenant several times over (metadata, scope, cache keys); the
# answer for a valid tenant is remembered. Invalid ones raise, and are not kept.
@functools.lru_cache(maxsize=4096)
def validate_tenant(value: str | None) -> str:
    if value is None or value == "":
        raise InvalidArgument.field(TENANT_KEY, "metadata is required", reason="INVALID_TENANT")
    if len(value) > TENANT_ID_MAX:
        raise InvalidArgument.field(
            TENANT_KEY, f"must be at most {TENANT_ID_MAX} characters", reason="INVALID_TENANT"
        )
    if not _TENANT_RE.fullmatch(value):
        raise InvalidArgument.field(
            TENANT_KEY, "may only contain A-Z, a-z, 0-9, '.', '_' and '-'", reason="INVALID_TENANT"
        )
    return value


def validate_actor(value: str | None) -> str | None:
    if not value:
        return None
    if len(value) > ACTOR_MAX:
        raise InvalidArgument.field(
            ACTOR_KEY, f"must be at most {ACTOR_MAX} characters", reason="INVALID_ACTOR"
        )
    if not value.isprintable():
        raise InvalidArgument.field(
            ACTOR_KEY, "must not contain control characters", reason="INVALID_ACTOR"
        )
    return value


def validate_transaction_id(value: str | None, field: str = TRANSACTION_KEY) -> str | None:
    # Present but empty is refused: running such a call outside the transaction
    # its client meant would commit its writes at once.
    if value is None:
        return None
    if not _TRANSACTION_ID_RE.fullmatch(value):
        raise InvalidArgument.field(
            field,
            "must be a transaction id from BeginTransaction",
            reason="INVALID_TRANSACTION_ID",
        )
    return value
