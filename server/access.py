"""The access log: one JSON line per call to a Repogate service.

What was called, how it ended, how long it took, for which tenant, by which caller
(`key:<name>` or `jwt:<sub>`) from which peer, under which request, trace, span and
transaction ids; never credentials, never row data. The trace and span ids are the
call's own span's when it is traced (whether its caller sent a trace or the server
started one), else the trace id of the caller's `traceparent`. The lines go
straight to a stream (stderr from the CLI, where the server's own log writes its
JSON lines too: server/logs.py), not through `logging`: its records, handler locks
and formatter cost about 40 µs of CPU per call on a loaded server, a tenth of a
cached GetUser.

A call only notes what its line needs; the lines are built and written off its path,
together, by a timer the event loop runs FLUSH_AFTER seconds after the first of them
ended (at once when FLUSH_LINES are waiting), and on `flush`. Per call, against the
same server without the log (python -m bench.ab --b REPOGATE_ACCESS_LOG=true, cached
GetUser, server CPU, 6 paired rounds): lines written by a callback after each event
loop turn +34 µs, by the timer +9 µs: an extra callback and a write each turn cost
the loop more than building the lines. In process (8 calls a turn, python -m
bench.layers and a loop of the same): a line written and flushed by the call 13.7 µs,
batched by the loop 10.7, through logging's QueueHandler and QueueListener 90, a
SimpleQueue and a writer thread 10.6. A process killed outright loses at most the
last FLUSH_AFTER seconds of lines; a server that stops writes them all.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sys
import time
from json.encoder import encode_basestring_ascii as _quoted
from typing import TextIO

import grpc
from opentelemetry.trace import SpanContext

from server.context import RequestContext

# The `logger` of access lines, beside the server's own lines on the same stream.
LOGGER = "repogate.access"
# W3C Trace Context: version-traceid-parentid-flags; version ff is invalid.
_TRACEPARENT = re.compile(r"(?!ff)[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_NO_TRACE = "0" * 32
# Seconds a line may wait to be written, and how many lines may wait.
FLUSH_AFTER = 0.05
FLUSH_LINES = 256
# Where lines go; None: the access log is off.
_out: TextIO | None = None
# Calls ended and not yet written: what `line` takes.
_pending: list[
    tuple[
        str,
        RequestContext,
        grpc.StatusCode,
        float,
        float,
        str | None,
        str | None,
        SpanContext | None,
    ]
] = []
# The event loop a flush is scheduled on: one flush at a time, and a loop that closed
# before running it (tests run one loop after another) does not hold the lines back.
_flush_on: asyncio.AbstractEventLoop | None = None


def configure(enabled: bool, stream: TextIO | None = None) -> None:
    """Writes the access log as JSON lines to `stream` (default: stderr), or turns it
    off; lines of calls already ended go where the log went until now."""
    global _out
    flush()
    _out = (stream or sys.stderr) if enabled else None


def enabled() -> bool:
    """Whether calls are logged: what only a line needs is not gathered otherwise."""
    return _out is not None


def record(
    method: str,
    rc: RequestContext,
    code: grpc.StatusCode,
    seconds: float,
    peer: str | None = None,
    caller: str | None = None,
    span: SpanContext | None = None,
) -> None:
    """Logs a call as it ends: its line is written within FLUSH_AFTER seconds.
    `span`: the context of the call's span, when it is traced."""
    global _flush_on
    if _out is None:
        return
    _pending.append((method, rc, code, seconds, time.time(), peer, caller, span))
    if len(_pending) >= FLUSH_LINES:
        flush()
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        flush()
        return
    if _flush_on is not loop:
        _flush_on = loop
        loop.call_later(FLUSH_AFTER, flush)


def flush() -> None:
    """Writes the lines of every call ended so far (the server calls it as it stops)."""
    global _flush_on
    _flush_on = None
    if not _pending:
        return
    ended = _pending.copy()
    _pending.clear()
    out = _out
    if out is None:
        return
    try:
        out.write("".join([line(*call) + "\n" for call in ended]))
        out.flush()
    except (OSError, ValueError):
        # A closed or broken stdout loses the lines, never a call.
        pass


def line(
    method: str,
    rc: RequestContext,
    code: grpc.StatusCode,
    seconds: float,
    ended: float | None = None,
    peer: str | None = None,
    caller: str | None = None,
    span: SpanContext | None = None,
) -> str:
    """The call's JSON line; `ended`: time.time() when it ended (default: now). Built as
    text, the same as json.dumps of its fields, at a third of the cost: it runs for every
    call, on a server at full load. Joined from parts once, with the part each method
    and code share kept: 2.6-2.9 µs a line where adding to a string field by field took
    3.4-3.9 (timeit, a GetUser's line)."""
    parts = ['{"time": "', _now(ended), '", ', _head(method, code), _milliseconds(seconds)]
    # Values a server's calls repeat (tenants, callers, peers) are quoted once each.
    if rc.tenant is not None:
        parts += (', "tenant": ', _repeated(rc.tenant))
    if caller is not None:
        parts += (', "caller": ', _repeated(caller))
    if peer is not None:
        parts += (', "peer": ', _repeated(peer))
    parts += (', "request_id": ', _quoted(rc.request_id))
    # Trace and span ids are hex digits: nothing in them to escape.
    if span is not None and span.is_valid:
        parts += (f', "trace_id": "{span.trace_id:032x}", "span_id": "{span.span_id:016x}"',)
    else:
        tid = trace_id(rc.traceparent)
        if tid is not None:
            parts += (', "trace_id": "', tid, '"')
    if rc.transaction_id is not None:
        parts += (', "transaction_id": ', _quoted(rc.transaction_id))
    parts.append("}")
    return "".join(parts)


_kept_quoted = functools.lru_cache(maxsize=4096)(_quoted)


def _repeated(value: str) -> str:
    """`value` quoted, kept when short: a caller could send a long tenant every call."""
    return _kept_quoted(value) if len(value) <= 128 else _quoted(value)


@functools.lru_cache(maxsize=1024)
def _head(method: str, code: grpc.StatusCode) -> str:
    """The fields of a line that its method and code decide, up to the duration's value."""
    return (
        f'"level": "INFO", "logger": "{LOGGER}", "method": {_quoted(method)}, '
        f'"code": "{code.name}", "duration_ms": '
    )


def _milliseconds(seconds: float) -> str:
    """repr(round(seconds * 1000, 3)), as json.dumps writes it, from one conversion to
    decimal rather than two: both round the same binary value to three places, and a
    duration has far fewer than 16 digits, so no shorter decimal names the same float."""
    text = f"{seconds * 1000:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


_second = -1
_second_text = ""


def _now(now: float | None = None) -> str:
    """The time `now` (default: now) in UTC to the millisecond, as datetime.isoformat
    gives it."""
    global _second, _second_text
    if now is None:
        now = time.time()
    second = int(now)
    if second != _second:
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = second
    return f"{_second_text}.{int((now - second) * 1000):03d}+00:00"


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a valid W3C `traceparent` header value, else None."""
    match = _TRACEPARENT.fullmatch(traceparent.strip()) if traceparent else None
    if match is None or match[1] == _NO_TRACE:
        return None
    return match[1]
