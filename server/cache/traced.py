"""A cache backend that gives each call a span, around any other backend.

It wraps the backend itself, the one seam that both CacheService and
read-through caching (through ResilientCache) pass. Keys and values stay out
of spans: they are the tenant's data. An unreachable backend marks its span as
an error; a value that is not an integer is the caller's fault and does not.

A call to Redis is a CLIENT span named by the Redis command it sends (`GET`,
`EVALSHA`; MULTI for the calls that send several in one transaction), with
OpenTelemetry's Redis attributes: `db.system` redis, `db.operation`,
`db.redis.database_index`, `server.address`, `server.port`. A call to the memory
backend is an INTERNAL span named `cache {operation}`. Either carries
`repogate.cache.operation`, `.backend`, `.keys` and, for lookups, `.hits`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from opentelemetry import trace

from server.cache.backend import CacheBackend
from server.cache.errors import NotInteger

BACKEND = "repogate.cache.backend"
OPERATION = "repogate.cache.operation"
KEYS = "repogate.cache.keys"
HITS = "repogate.cache.hits"
DB_SYSTEM, DB_OPERATION = "db.system", "db.operation"
DB_REDIS_DATABASE_INDEX = "db.redis.database_index"
# The command each operation sends (server/cache/redis.py).
COMMANDS = MappingProxyType(
    {
        "get": "GET",
        "get_many": "MGET",
        "set": "SET",
        "set_many": "MULTI",
        "delete": "UNLINK",
        "set_if_newer": "EVALSHA",
        "scan": "SCAN",
        "delete_matching": "SCAN",
        "incr": "MULTI",
        "expire": "PEXPIRE",
        "ping": "PING",
    }
)


def redis_attributes(url: str | None) -> Mapping[str, str | int]:
    """What every span of the Redis at `url` carries."""
    attributes: dict[str, str | int] = {DB_SYSTEM: "redis"}
    if not url:
        return attributes
    parts = urlsplit(url)
    if "+" in parts.scheme:  # redis+cluster://, redis+sentinel://: several nodes, none its address
        return attributes
    if parts.scheme == "unix":
        attributes["server.address"] = parts.path
        index = parse_qs(parts.query).get("db", ["0"])[0]
    else:
        if parts.hostname:
            attributes["server.address"] = parts.hostname
        attributes["server.port"] = parts.port or 6379
        index = parts.path.strip("/") or parse_qs(parts.query).get("db", ["0"])[0]
    if index.isdigit():
        attributes[DB_REDIS_DATABASE_INDEX] = int(index)
    return attributes


class TracedCache:
    def __init__(self, backend: CacheBackend, tracer: trace.Tracer, url: str | None = None) -> None:
        self.backend = backend
        self.name = backend.name
        self.stats = backend.stats  # the same counters, not a copy
        self._tracer = tracer
        # Redis is a remote call; the memory backend works in this process.
        remote = backend.name != "memory"
        self._kind = trace.SpanKind.CLIENT if remote else trace.SpanKind.INTERNAL
        # Each operation's span name and attributes, worked out once.
        self._spans = {
            operation: _span_of(operation, backend.name, redis_attributes(url) if remote else None)
            for operation in COMMANDS
        }

    def get(self, key: str) -> Coroutine[Any, Any, bytes | None]:
        if not trace.get_current_span().is_recording():
            # The read-through's GET in an untraced call: no span to start (see _span),
            # and the backend's own coroutine, not one of this wrapper's around it.
            return self.backend.get(key)
        return self._get(key)

    async def _get(self, key: str) -> bytes | None:
        with self._span("get", 1) as span:
            value = await self.backend.get(key)
            span.set_attribute(HITS, int(value is not None))
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        with self._span("get_many", len(keys)) as span:
            values = await self.backend.get_many(keys)
            span.set_attribute(HITS, sum(value is not None for value in values))
        return values

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        with self._span("set", 1):
            await self.backend.set(key, value, ttl)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None = None) -> None:
        with self._span("set_many", len(items)):
            await self.backend.set_many(items, ttl)

    async def delete(self, keys: Sequence[str]) -> int:
        with self._span("delete", len(keys)):
            return await self.backend.delete(keys)

    def set_if_newer(self, key: str, value: bytes, ttl: float) -> Coroutine[Any, Any, bool]:
        if not trace.get_current_span().is_recording():
            return self.backend.set_if_newer(key, value, ttl)
        return self._set_if_newer(key, value, ttl)

    async def _set_if_newer(self, key: str, value: bytes, ttl: float) -> bool:
        with self._span("set_if_newer", 1):
            return await self.backend.set_if_newer(key, value, ttl)

    async def scan(self, pattern: str, cursor: str, count: int) -> tuple[list[str], str]:
        with self._span("scan"):
            return await self.backend.scan(pattern, cursor, count)

    async def delete_matching(self, pattern: str) -> int:
        with self._span("delete_matching"):
            return await self.backend.delete_matching(pattern)

    async def incr(self, key: str, amount: int, ttl: float | None = None) -> int:
        with self._span("incr", 1):
            return await self.backend.incr(key, amount, ttl)

    async def expire(self, key: str, ttl: float) -> bool:
        with self._span("expire", 1):
            return await self.backend.expire(key, ttl)

    async def ping(self) -> None:
        with self._span("ping"):
            await self.backend.ping()

    async def close(self) -> None:
        await self.backend.close()

    @contextlib.contextmanager
    def _span(self, operation: str, keys: int | None = None) -> Iterator[trace.Span]:
        # Only inside a traced call, as statements: no root spans from background work.
        if not trace.get_current_span().is_recording():
            yield trace.INVALID_SPAN
            return
        # Not made current: nothing runs under a cache call that could be its child.
        name, attributes = self._spans[operation]
        span = self._tracer.start_span(name, kind=self._kind, attributes=attributes)
        if keys is not None:
            span.set_attribute(KEYS, keys)
        try:
            yield span
        except NotInteger:
            raise
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
            raise
        finally:
            span.end()


def _span_of(
    operation: str, backend: str, redis: Mapping[str, str | int] | None
) -> tuple[str, Mapping[str, str | int]]:
    """The name and attributes of `operation`'s span: Redis's when `redis` is its
    attributes, else those of a backend in this process."""
    if redis is None:
        return f"cache {operation}", MappingProxyType({OPERATION: operation, BACKEND: backend})
    command = COMMANDS[operation]
    return command, MappingProxyType(
        {**redis, DB_OPERATION: command, OPERATION: operation, BACKEND: backend}
    )
