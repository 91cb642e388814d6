"""The Redis backend: redis.asyncio over a connection pool built from a URL (one
server, or the master Sentinel names; a cluster's is server/cache/cluster.py).

Every call is bounded by short timeouts (to get a free connection, to connect,
to read) and is not retried (but for a cluster's one retry after a lost node,
server/cache/topology.py): a cache that answers late is worth less than a miss,
and the caller decides what a failure means (CacheService: UNAVAILABLE;
read-through: a miss). Redis and socket errors become CacheUnavailable in one
place, `_Command` (and `_pipelined` for the lane); so does a command during which
a cluster's or Sentinel's primaries changed (`failed_over`).

Whenever a cluster's or Sentinel's primaries become known (first, or anew), each is
asked whether it was promoted from a replica since it started (`INFO replication`,
`master_replid2`): such a primary may lack writes its old primary acknowledged, as
after a failover this process did not see, and `stats.failovers` counts it.

GET and set_if_newer, the read-through's commands, go through one pipelined
connection (server/cache/lane.py) when `pipelined` and the URL names one server;
every other command, and both otherwise, through redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from types import TracebackType

from redis.exceptions import RedisClusterException, RedisError, ResponseError

from server.cache import topology
from server.cache.backend import ORDER_BYTES
from server.cache.errors import CacheUnavailable, NotInteger
from server.cache.lane import Lane, Reply
from server.cache.stats import CacheStats

log = logging.getLogger(__name__)

# Keys examined per SCAN round trip while deleting by pattern.
_DELETE_SCAN_COUNT = 1000
# Orders are zero-padded to one width, so comparing them as strings compares numbers.
_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
local width = tonumber(ARGV[3])
if current and string.sub(current, 1, width) >= string.sub(ARGV[1], 1, width) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_SET_IF_NEWER_SHA = hashlib.sha1(_SET_IF_NEWER.encode()).hexdigest()
# What redis-py raises when Redis cannot answer; OSError covers TimeoutError. Its
# cluster client raises RedisClusterException (not a RedisError) when no node answers
# or a slot has no node.
FAILURES = (RedisError, RedisClusterException, OSError)
# Redis's words for INCRBY on a value that is not an int64, or a result outside it.
_NOT_INTEGER = ("not an integer", "overflow")


class RedisBackend:
    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.25,
        max_connections: int = 100,
        pipelined: bool = True,
    ) -> None:
        self.stats = CacheStats()
        self.topology = topology.parse(url)
        self._redis = topology.client(
            self.topology, timeout=timeout, max_connections=max_connections
        )
        self._set_if_newer = self._redis.register_script(_SET_IF_NEWER)
        self._command = _Command(self, max_connections, timeout)
        # The lane talks to one server and cannot follow a failover or a MOVED: plain
        # URLs only (a cluster or Sentinel goes through redis-py's clients).
        plain = self.topology.kind is topology.Kind.PLAIN
        self._lane = Lane(url, timeout) if pipelined and plain else None
        self._primaries_seen: object = None
        # Asking the primaries just found whether they were promoted (`_check_promoted`).
        self._checking: asyncio.Task[None] | None = None

    async def get(self, key: str) -> bytes | None:
        if self._lane is not None:
            value = await self._pipelined("GET", key)
            if not isinstance(value, bytes | None):
                raise self._unexpected(value)
        else:
            async with self._command:
                value = _bytes(await self._redis.get(key))
        self.stats.count_lookups([value])
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        async with self._command:
            values = [_bytes(value) for value in await self._redis.mget(keys)]
        self.stats.count_lookups(values)
        return values

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        async with self._command:
            await self._redis.set(key, value, px=_ms(ttl))

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None = None) -> None:
        if not items:
            return
        async with self._command:
            if ttl is None:
                await self._redis.mset(dict(items))
                return
            # MSET takes no TTL: SET ... PX per key, in one MULTI round trip.
            async with self._redis.pipeline(transaction=True) as pipe:
                for key, value in items:
                    pipe.set(key, value, px=_ms(ttl))
                await pipe.execute()

    async def delete(self, keys: Sequence[str]) -> int:
        # UNLINK frees large values off Redis's main thread; it counts like DEL.
        if not keys:
            return 0
        async with self._command:
            deleted: int = await self._redis.unlink(*keys)
        return deleted

    async def set_if_newer(self, key: str, value: bytes, ttl: float) -> bool:
        args: list[bytes | int] = [value, math.ceil(ttl * 1000), ORDER_BYTES]
        if self._lane is None:
            async with self._command:
                written = await self._set_if_newer(keys=[key], args=args)
            return bool(written)
        try:
            written = await self._lane.execute("EVALSHA", _SET_IF_NEWER_SHA, 1, key, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                self._failed(exc)
                raise CacheUnavailable() from exc
            # A Redis that restarted, or was flushed, forgot the script: EVAL loads it.
            written = await self._pipelined("EVAL", _SET_IF_NEWER, 1, key, *args)
        except FAILURES as exc:
            self._failed(exc)
            raise CacheUnavailable() from exc
        return bool(written)

    async def scan(self, pattern: str, cursor: str, count: int) -> tuple[list[str], str]:
        async with self._command:
            after, keys = await self._redis.scan(int(cursor or 0), match=pattern, count=count)
        return [_text(key) for key in keys], str(after) if after else ""

    async def delete_matching(self, pattern: str) -> int:
        deleted, cursor = 0, ""
        while True:
            keys, cursor = await self.scan(pattern, cursor, _DELETE_SCAN_COUNT)
            if keys:
                deleted += await self.delete(keys)
            if not cursor:
                return deleted

    async def incr(self, key: str, amount: int, ttl: float | None = None) -> int:
        async with self._command:
            if ttl is None:
                value: int = await self._redis.incrby(key, amount)
                return value
            # SET NX gives a new key its TTL (and leaves an existing one alone), then
            # INCRBY, which keeps whatever TTL the key has: atomic together in MULTI.
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, b"0", nx=True, px=_ms(ttl))
                pipe.incrby(key, amount)
                _, value = await pipe.execute()
            return value

    async def expire(self, key: str, ttl: float) -> bool:
        async with self._command:
            existed: bool = await self._redis.pexpire(key, math.ceil(ttl * 1000))
        return existed

    async def ping(self) -> None:
        async with self._command:
            await self._redis.ping()

    async def close(self) -> None:
        if self._checking is not None:
            self._checking.cancel()
        if self._lane is not None:
            await self._lane.close()
        await self._redis.aclose()

    async def _pipelined(self, *args: bytes | str | int) -> Reply:
        assert self._lane is not None
        try:
            return await self._lane.execute(*args)
        except FAILURES as exc:
            self._failed(exc)
            raise CacheUnavailable() from exc

    def _unexpected(self, reply: object) -> CacheUnavailable:
        exc = ResponseError(f"unexpected reply {reply!r}")
        self._failed(exc)
        return CacheUnavailable()

    def _primaries(self) -> object:
        """Who serves writes (a cluster's primaries, Sentinel's master); None for one
        Redis, and before the client has found out."""
        return None

    async def failed_over(self) -> bool:
        """Whether the primaries changed since the last look: then a replica was
        promoted (or the slots moved), and what this command read may be from before
        a write the new primary never received. Counted as a cache error.

        Primaries newly known (first, or anew) are asked whether they were promoted
        since they started; every command waits for that answer, so none returns
        from a promoted primary before `stats.failovers` counts it."""
        now = self._primaries()
        if now != self._primaries_seen:
            before, self._primaries_seen = self._primaries_seen, now
            if now:
                self._checking = asyncio.create_task(self._check_promoted())
            if before and now:  # not when first found out, or lost
                self.stats.errors += 1
                log.warning("cache unavailable: the cache's primaries changed (a failover)")
                return True
        if self._checking is not None and not self._checking.done():
            await asyncio.shield(self._checking)
        return False

    async def _replication(self) -> list[Mapping[str, object]]:
        """Each primary's INFO replication (Sentinel's master: the one this client uses)."""
        return [await self._redis.info("replication")]

    async def _check_promoted(self) -> None:
        """Counts a failover (`stats.failovers`) if a primary was promoted from a replica
        since it started: Redis then keeps its old primary's replication id as
        `master_replid2` (all zeros otherwise; cleared by a restart or a full resync).
        Replication is asynchronous, so it may lack writes its old primary acknowledged:
        tombstones among them. A primary that cannot be asked counts as promoted."""
        try:
            answers = await self._replication()
            promoted = sum(_promoted(info) for info in answers)
        except Exception as exc:  # FAILURES, or an answer it cannot read: it cannot tell
            log.warning(
                "cannot ask the cache's primaries whether one was promoted from a replica "
                "(%s: %s): counted as a failover",
                type(exc).__name__,
                exc,
            )
        else:
            if not promoted:
                return
            log.warning(
                "%d of the cache's %d primaries were promoted from replicas since they started:"
                " they may lack writes lost in a failover",
                promoted,
                len(answers),
            )
        self.stats.failovers += 1

    def _failed(self, exc: BaseException) -> None:
        self.stats.errors += 1
        log.warning("cache unavailable: %s: %s", type(exc).__name__, exc)


class _Command:
    """Wraps each command: holds one of the pool's connections, and turns Redis and
    socket errors into CacheUnavailable.

    A burst beyond the pool's connections waits (up to `timeout`) for a free one
    instead of failing at once, as redis-py's plain pool would. redis-py's
    BlockingConnectionPool does the same at about 8 µs a command; a semaphore
    that is only waited on when full costs well under one.
    """

    def __init__(self, backend: RedisBackend, connections: int, timeout: float) -> None:
        self._backend = backend
        self._slots = asyncio.Semaphore(connections)
        self._timeout = timeout

    async def __aenter__(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # returns at once
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self._slots.acquire()
        except TimeoutError as exc:
            self._backend._failed(exc)
            raise CacheUnavailable() from exc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._slots.release()
        if exc is None:
            if await self._backend.failed_over():
                raise CacheUnavailable()
            return
        if isinstance(exc, ResponseError):
            if any(words in str(exc) for words in _NOT_INTEGER):
                raise NotInteger() from exc
            self._backend._failed(exc)
            raise CacheUnavailable() from exc
        if isinstance(exc, FAILURES):
            self._backend._failed(exc)
            raise CacheUnavailable() from exc


def _promoted(info: Mapping[str, object]) -> bool:
    """Whether a primary's INFO replication shows it promoted since it started (redis-py
    reads an all-zero `master_replid2` as the int 0); ValueError if it does not say."""
    if "master_replid2" not in info:
        raise ValueError("INFO replication names no master_replid2")
    return str(info["master_replid2"]).strip("0") != ""


def _ms(ttl: float | None) -> int | None:
    """Seconds (> 0) to Redis milliseconds, rounded up so that a TTL never ends early."""
    return None if ttl is None else math.ceil(ttl * 1000)


# decode_responses is off, so Redis answers bytes; the client's types allow str as well.
def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _text(key: bytes | str) -> str:
    return key if isinstance(key, str) else key.decode(errors="replace")
