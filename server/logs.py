"""The server's own log: one JSON object a line, on stderr, beside the access log's.

Each line has `time` (UTC, to the millisecond), `level`, `logger` and `message`, and
`exception` when one is logged with its traceback. A line logged while a call is
served also has the call's `request_id` and `tenant`, and, when the call is traced,
`trace_id` and `span_id` of the span current where it was logged (the call's, or
one of its statements'): the same ids the access log and the exported spans carry.
Access lines (server/access.py) have the same `time`, `level` and `logger` keys, so
one parser reads the whole stream. Spans written by the console exporter go to
stdout, never here.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from opentelemetry import trace

from server import context

# Alembic narrates every plugin it loads; its warnings still show.
_QUIETER = ("alembic",)


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call = context.bound()
        if call is not None:
            fields["request_id"] = call.request_id
            if call.tenant is not None:
                fields["tenant"] = call.tenant
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            fields["trace_id"] = f"{span.trace_id:032x}"
            fields["span_id"] = f"{span.span_id:016x}"
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exception"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return json.dumps(fields, ensure_ascii=False, default=str)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # As the access log writes it: datetime.isoformat's form, in UTC.
        seconds = int(record.created)
        millis = int((record.created - seconds) * 1000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}+00:00"


def configure(level: str, stream: TextIO | None = None) -> None:
    """Sends every log record at `level` and above to `stream` (default: stderr) as JSON
    lines, in place of whatever handlers the root logger had."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIETER:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
