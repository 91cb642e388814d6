"""The access log: one JSON line per call to a Repogate service.

What was called, how it ended, how long it took, for which tenant, under which
request, trace and transaction ids; never credentials, never row data. It goes
to the `repogate.access` logger at INFO, which `configure` prints as bare JSON
lines on stdout (the server's own log keeps its format, on stderr).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

import grpc
from grpc import aio

from server.context import RequestContext

log = logging.getLogger("repogate.access")

TRACEPARENT_KEY = "traceparent"
# W3C Trace Context: version-traceid-parentid-flags; version ff is invalid.
_TRACEPARENT = re.compile(r"(?!ff)[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_NO_TRACE = "0" * 32


def configure(enabled: bool) -> None:
    """Prints the access log as bare JSON lines on stdout, or silences it."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO if enabled else logging.WARNING)


def record(
    method: str,
    rc: RequestContext,
    code: grpc.StatusCode,
    seconds: float,
    ctx: aio.ServicerContext,
) -> None:
    """Logs a call as it ends."""
    if not log.isEnabledFor(logging.INFO):
        return
    fields = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "method": method,
        "code": code.name,
        "duration_ms": round(seconds * 1000, 3),
        "tenant": rc.tenant,
        "request_id": rc.request_id,
        "trace_id": trace_id(ctx.invocation_metadata() or ()),
        "transaction_id": rc.transaction_id,
    }
    log.info(json.dumps({key: value for key, value in fields.items() if value is not None}))


def trace_id(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The trace id of a valid W3C `traceparent`, else None."""
    value = next((v for k, v in metadata if k == TRACEPARENT_KEY), None)
    match = _TRACEPARENT.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or match[1] == _NO_TRACE:
        return None
    return match[1]
