"""Read-through caching of every entity's Get, and forgetting what commits change.

An entry is `<version><kind><payload>`: the row's version in 20 digits, then
`V` and the serialized message, or `T` for a tombstone that a committed write
left. A fill lands only over an absent entry or a lower (version, kind), so a
reader that loaded a row before a write committed cannot put the old row back
over the write's tombstone, while the row as that write left it can.

If forgetting fails (the cache was unreachable at commit), entries from before
the failure may be stale: reads then skip the cache for one TTL, after which
every such entry has expired. Reads inside a transaction never use the cache:
they must see the transaction's own writes.

Entries dropped without tombstones (a bulk write's tables, `drop`) bump a
generation: a reader that loaded its row before the drop does not fill.

Writes made through other processes reach a gated cache (`bound`) through a feed
(server/coherence.py) that `apply`s them and `confirm`s every so often that all
writes committed before a time have been forgotten. A gated cache is used only
within `bound` seconds of that time, so a feed that stalls or breaks costs
misses, never an answer older than the bound.

With read replicas (server/replicas.py) a load may come from a standby some way
behind. A row's own writes leave tombstones that fence its older versions out
(REPOGATE_REPLICA_MAX_LAG is kept below the TTL, so a tombstone outlives the lag);
a drop leaves none, so a load fills only from a replica known to have replayed
every write committed before this process's last drop. A read carrying a
consistency token skips a gated cache: its entries may predate the token's write
by up to `bound` seconds. An ungated cache saw the write's tombstones before the
write was answered, so no entry in it is older than the token.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message

from repositories.changes import Changes
from repositories.errors import InvalidArgument
from server import consistency, context
from server.cache import ResilientCache, keys

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

_WIDTH = 20
# A row deleted for good: no fill may ever land over its tombstone.
_GONE = 10**_WIDTH - 1
# Ranked by the cache as bytes: a tombstone below a value of the same version.
_TOMBSTONE, _VALUE = b"T", b"V"


def schema_version(message_cls: type[Message]) -> int:
    """Changes whenever the message's definition does, so old entries are never read."""
    return zlib.crc32(message_cls.DESCRIPTOR.file.serialized_pb)


class ReadThrough:
    def __init__(
        self,
        cache: ResilientCache,
        ttl: float,
        *,
        enabled: bool = True,
        bound: float | None = None,
        replicated: bool = False,
    ) -> None:
        """`bound`: the cache is gated, usable only within `bound` seconds of the last
        `confirm`; None: always usable (this process sees every write).

        `replicated`: the cache is a Redis Cluster or Sentinel's master, which a
        failover can replace by a replica that missed the last writes (replication is
        asynchronous), tombstones among them. A failover shows here as a cache error
        (a call to the lost primary failed, or the backend saw the primaries change)
        or, to a process that first reaches the cache after it, as a primary promoted
        since it started (`stats.failovers`; server/cache/redis.py `failed_over`).
        After either, and for a lookup made while one happened, reads skip the cache
        for one TTL, by when every entry written before the failover has expired."""
        self._cache = cache
        self._ttl = ttl
        self._enabled = enabled
        self.bound = bound
        # table -> schema version of the message cached for it
        self._versions: dict[str, int] = {}
        self._skip_until = 0.0
        self._fresh_until = math.inf if bound is None else -math.inf
        self._generation = 0
        # time.monotonic() of this process's last drop (bulk write, feed, `drop`).
        self._dropped_at = -math.inf
        self._replicated = replicated
        self._troubles = 0  # the backend's errors and failovers when last looked at

    def register(self, table: str, message_cls: type[Message]) -> None:
        self._versions[table] = schema_version(message_cls)

    async def get(
        self,
        table: str,
        id_: uuid.UUID,
        load: Callable[[], Awaitable[tuple[M, int]]],
        parse: Callable[[bytes], M],
    ) -> M:
        """The message for row `id_`: from the cache, or `load`ed (with the row's
        version) and then cached."""
        session = consistency.current()
        tokened = session is not None and session.at_least is not None
        if (
            not self._usable()
            or context.current().transaction_id is not None
            or (tokened and self.bound is not None)
        ):
            return (await load())[0]
        key = self._key(table, context.tenant(), id_)
        troubles = self._troubles_seen()
        entry = await self._cache.get(key)
        if self._replicated and self._troubles_seen() != troubles:
            entry = None  # a failover may have been under way: read around it
        if entry is not None and entry[_WIDTH : _WIDTH + 1] == _VALUE:
            return parse(entry[_WIDTH + 1 :])
        generation = self._generation
        message, version = await load()
        if generation == self._generation and (
            session is None or session.complete_as_of > self._dropped_at
        ):
            await self._cache.set_if_newer(
                key, _entry(version, _VALUE, message.SerializeToString()), self._ttl
            )
        return message

    async def forget(self, changes: Changes) -> None:
        """Leaves tombstones for the rows `changes` names, and drops every entry of the
        tables it changed in bulk. Called once the changes have committed."""
        await self.apply(changes)

    async def apply(self, changes: Changes) -> bool:
        """`forget`, saying whether the cache took all of it."""
        if not self._enabled:
            return True
        done = True
        for table, tenant, id_, version in changes.rows:
            if table in self._versions and _servable(tenant):
                tombstone = _entry(_GONE if version is None else version, _TOMBSTONE, b"")
                key = self._key(table, tenant, id_)
                done &= await self._cache.set_if_newer(key, tombstone, self._ttl)
        patterns = [
            keys.entity_pattern(table, self._versions[table], tenant)
            for table, tenant in changes.tables
            if table in self._versions and _servable(tenant)
        ] + [
            keys.entity_pattern(table, self._versions[table])
            for table in changes.everywhere
            if table in self._versions
        ]
        if patterns:
            self._generation += 1
            self._dropped_at = time.monotonic()
        for pattern in patterns:
            done &= await self._cache.delete_matching(pattern)
        if not done:
            self._skip_until = time.monotonic() + self._ttl
            log.warning("cache invalidation failed; reading around the cache for %ss", self._ttl)
        return done

    def confirm(self, sent: float) -> None:
        """Every write that committed before `sent` (time.monotonic()) has been
        forgotten: a gated cache may be used until `bound` seconds after it."""
        if self.bound is not None:
            self._fresh_until = max(self._fresh_until, sent + self.bound)

    async def drop(self) -> bool:
        """Forgets every entity entry, when writes may have gone unannounced (the
        feed of other processes' writes was down); says whether the cache took it."""
        if not self._enabled:
            return True
        self._generation += 1
        self._dropped_at = time.monotonic()
        return await self._cache.delete_matching(keys.every_entity_pattern())

    @property
    def gate_open(self) -> bool:
        """Whether the feed of other processes' writes has kept up within the bound."""
        return time.monotonic() < self._fresh_until

    def _usable(self) -> bool:
        now = time.monotonic()
        if self._replicated and self._troubles_seen() != self._troubles:
            self._troubles = self._troubles_seen()
            if self._skip_until <= now:
                log.warning(
                    "replicated cache failed or failed over; reading around it for %ss", self._ttl
                )
            self._skip_until = now + self._ttl
        return self._enabled and self._skip_until <= now < self._fresh_until

    def _troubles_seen(self) -> int:
        """Cache errors and failovers so far: either may hide writes a failover lost."""
        return self._cache.stats.errors + self._cache.stats.failovers

    def _key(self, table: str, tenant: str, id_: uuid.UUID) -> str:
        return keys.entity_key(table, self._versions[table], tenant, id_)


def _servable(tenant: str) -> bool:
    """Whether calls can act for `tenant` (and so have cached its rows): the database
    may announce rows that a tool wrote for tenants Repogate would refuse."""
    try:
        context.validate_tenant(tenant)
    except InvalidArgument:
        return False
    return True


def _entry(version: int, kind: bytes, payload: bytes) -> bytes:
    return b"%020d" % version + kind + payload
