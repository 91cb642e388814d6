"""Read replicas: PostgreSQL streaming standbys that serve reads (docs/replicas.md).

Each replica has its own pool, circuit breaker and health. Health is measured
against the primary's own clock, never the standbys' (no clock skew enters):
every probe interval the primary's WAL insert position P is sampled at time t,
then each replica's replay position R is read. A replica that has replayed
R >= P(t) holds every write committed before t; it is *fresh* until t plus
REPOGATE_REPLICA_MAX_LAG. A read without a token goes only to a fresh replica,
so it sees every write committed more than max-lag seconds before it. This holds
while replay is paused, while a standby's WAL receiver is cut off, and while the
primary is idle (where now() - pg_last_xact_replay_timestamp() would grow with no
lag at all).

Reads are spread over the primary and the usable replicas by least outstanding
requests: each read goes where the fewest reads are in flight (a replica on a
tie), so a server slowed by its other work gets fewer. A read with a consistency
token (server/consistency.py) goes to a fresh replica that has replayed the
token's position (known from the last probe, or else read on the read's own
connection first: one more round trip, see bench/replicas.py), or to the primary.
A replica still behind, failing, or out (breaker open, not fresh, not a standby)
leaves the read to the primary: a read never fails because of a replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from repositories import wal
from repositories.database import Database, RepositorySource, create_engine
from repositories.errors import Overloaded, PoolExhausted
from server import consistency
from server.breaker import Breaker, State, database_fault
from server.consistency import Session

if TYPE_CHECKING:
    from server.settings import Settings

T = TypeVar("T")
log = logging.getLogger(__name__)

# Seconds between probes, at most; a quarter of the max lag when that is shorter, so a
# healthy replica stays fresh with room to spare. Two one-row SELECTs a probe.
PROBE_INTERVAL = 0.5


class _Missed:
    """The read was not served by a replica: the primary serves it."""


_MISSED: Final = _Missed()


def name(url: str) -> str:
    """How a replica is named in logs, metrics and health: host:port/database."""
    u = make_url(url)
    return f"{u.host or 'localhost'}:{u.port or 5432}/{u.database or ''}"


class Replica:
    """One standby: its database (pool), breaker, and what the last probe found."""

    def __init__(self, db: Database, breaker: Breaker, label: str) -> None:
        self.db = db
        self.breaker = breaker
        self.name = label
        # The replay position last read (probe or read), in bytes of WAL.
        self.replayed = 0
        # time.monotonic() of the latest primary sample it had replayed; -inf: none.
        self.caught_up_at = -math.inf
        self.standby = True
        self.serving: bool | None = None  # as last logged; None: not yet probed
        self.busy = 0  # reads in flight, for least-loaded choice
        self.reads = 0  # reads it served

    def lag(self, now: float) -> float:
        """Seconds of writes it may be missing (inf until a probe has seen it caught up)."""
        return max(0.0, now - self.caught_up_at)

    def out(self) -> None:
        """Taken out until a probe finds it caught up again."""
        self.caught_up_at = -math.inf


class Replicas:
    """Chooses a replica for each read and keeps every replica's health."""

    def __init__(
        self,
        primary: Database,
        replicas: Sequence[Replica],
        max_lag: float,
        probe_timeout: float = 1.0,
    ) -> None:
        self._primary = primary
        self.all = tuple(replicas)
        self.max_lag = max_lag
        self.interval = min(PROBE_INTERVAL, max_lag / 4)
        self._probe_timeout = probe_timeout
        # (time.monotonic(), primary insert position), oldest first, for max_lag seconds.
        self._samples: deque[tuple[float, int]] = deque()
        self._turn = 0
        self.primary_busy = 0  # reads in flight on the primary
        self.primary_reads = 0  # reads the primary served

    def usable(self, replica: Replica, now: float) -> bool:
        fresh = now < replica.caught_up_at + self.max_lag
        return fresh and replica.standby and replica.breaker.state is not State.OPEN

    def pick(self, at_least: int | None) -> Replica | None:
        """Where the fewest reads are in flight, among the primary (None) and the usable
        replicas. With a token, a replica not known to have replayed it counts one more
        (the round trip that asks it); the primary has every write. Ties go to a
        replica, replicas' ties taken in turn."""
        now = time.monotonic()
        count = len(self.all)
        self._turn = (self._turn + 1) % count
        best = (self.primary_busy, 1)
        chosen = None
        for i in range(count):
            replica = self.all[(self._turn + i) % count]
            if not self.usable(replica, now):
                continue
            asks = at_least is not None and replica.replayed < at_least
            rank = (replica.busy + asks, 0)
            if rank < best:
                best, chosen = rank, replica
        return chosen

    async def read(
        self,
        work: Callable[[RepositorySource], Awaitable[T]],
        tenant: str,
        session: Session | None,
        on_primary: Callable[[], Awaitable[T]],
    ) -> T:
        """`work` run on a replica, or by `on_primary` on the primary: chosen, or when no
        replica could serve it (a replica that fails mid-read has not answered). Errors
        that are answers (NotFound, a conflict to retry) are raised as the primary's are."""
        at_least = session.at_least if session is not None else None
        replica = self.pick(at_least)
        if replica is None or not replica.breaker.allow():
            return await self._on_primary(on_primary)
        result = await self._replica(replica, work, tenant, session)
        if isinstance(result, _Missed):
            return await self._on_primary(on_primary)
        return result

    async def _on_primary(self, on_primary: Callable[[], Awaitable[T]]) -> T:
        session = consistency.current()
        if session is not None:
            session.on_replica = False
        self.primary_busy += 1
        try:
            return await on_primary()
        finally:
            self.primary_busy -= 1
            self.primary_reads += 1

    async def _replica(
        self,
        replica: Replica,
        work: Callable[[RepositorySource], Awaitable[T]],
        tenant: str,
        session: Session | None,
    ) -> T | _Missed:
        at_least = session.at_least if session is not None else None
        replica.busy += 1
        try:
            result = await self._run(replica, work, tenant, at_least)
        except Exception as exc:
            replica.breaker.ended(exc)
            if not (database_fault(exc) or isinstance(exc, (PoolExhausted, Overloaded))):
                self._answered(replica, session)  # NOT_FOUND, say: an answer all the same
                raise
            # A replica that died mid-read, or had no connection for the tenant (its pool,
            # or the tenant's share of it, taken): the read is run again on the primary.
            log.warning("replica %s failed a read (%s); the primary serves it", replica.name, exc)
            return _MISSED
        except BaseException:
            replica.breaker.release()
            raise
        finally:
            replica.busy -= 1
        replica.breaker.ended(None)
        if not isinstance(result, _Missed):
            self._answered(replica, session)
        return result

    @staticmethod
    def _answered(replica: Replica, session: Session | None) -> None:
        replica.reads += 1
        if session is not None:
            session.on_replica = True
            session.complete_as_of = min(session.complete_as_of, replica.caught_up_at)

    async def _run(
        self,
        replica: Replica,
        work: Callable[[RepositorySource], Awaitable[T]],
        tenant: str,
        at_least: int | None,
    ) -> T | _Missed:
        async with replica.db.unit_of_work(tenant, read_only=True) as uow:
            if at_least is not None and replica.replayed < at_least:
                replica.replayed = max(replica.replayed, await uow.wal_position(wal.REPLAYED) or 0)
                if replica.replayed < at_least:
                    # Not there yet. No wait: on loopback a standby replays a commit
                    # within a millisecond or so of it, and the primary answers now.
                    return _MISSED
            return await work(uow)

    async def watch(self) -> None:
        """Probes the primary and every replica every `interval` seconds, for ever."""
        while True:
            await self.probe()
            await asyncio.sleep(self.interval)

    async def probe(self) -> None:
        """Samples the primary's position, then reads each replica's replay position."""
        now = time.monotonic()
        try:
            async with asyncio.timeout(self._probe_timeout):
                inserted = await self._primary.position(wal.INSERTED)
        except Exception as exc:  # the replicas' freshness then ages from older samples
            log.debug("replica probe: the primary's position unread: %r", exc)
        else:
            if inserted is not None:
                self._samples.append((now, inserted))
        while self._samples and self._samples[0][0] < now - self.max_lag:
            self._samples.popleft()
        await asyncio.gather(*(self._probe(replica) for replica in self.all))

    async def _probe(self, replica: Replica) -> None:
        breaker = replica.breaker
        # Half-open, the probe is the breaker's trial call; otherwise it only looks.
        guard = breaker.guard() if breaker.wants_probe else contextlib.nullcontext()
        try:
            async with guard, asyncio.timeout(self._probe_timeout):
                replayed = await replica.db.position(wal.REPLAYED)
        except Exception as exc:
            self._serving(replica, False, f"its probe failed ({exc!r})")
            replica.out()
            return
        if replayed is None:
            self._serving(replica, False, "it is not a standby (not in recovery)")
            replica.standby = False
            replica.out()
            return
        replica.standby = True
        # The probe says where it is now (a standby cloned anew may be behind its last).
        replica.replayed = replayed
        for sampled, inserted in reversed(self._samples):
            if inserted <= replayed:
                replica.caught_up_at = max(replica.caught_up_at, sampled)
                break
        fresh = time.monotonic() < replica.caught_up_at + self.max_lag
        self._serving(replica, fresh, f"it has not replayed the primary's last {self.max_lag:g}s")

    @staticmethod
    def _serving(replica: Replica, serving: bool, why: str) -> None:
        """Logs a replica's going into or out of service (`why`), once each time."""
        if serving and replica.serving is not True:
            log.info("replica %s serves reads", replica.name)
        elif not serving and replica.serving is not False:
            log.warning("replica %s serves no reads: %s", replica.name, why)
        replica.serving = serving

    def status(self) -> dict[str, dict[str, Any]]:
        """Each replica's state, for health and pool status."""
        now = time.monotonic()
        return {
            r.name: {"usable": self.usable(r, now), "lag": r.lag(now), "reads": r.reads}
            for r in self.all
        }

    async def dispose(self) -> None:
        for replica in self.all:
            await replica.db.dispose()


class ReplicaCollector:
    """Prometheus series for each replica: lag, whether it serves reads, reads served;
    and reads the primary served in their place."""

    def __init__(self, replicas: Replicas) -> None:
        self._replicas = replicas

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "repogate_replica_lag_seconds",
            "Seconds of writes a replica may be missing, by the primary's clock.",
            labels=["replica"],
        )
        usable = GaugeMetricFamily(
            "repogate_replica_usable",
            "1 while a replica serves reads (fresh, a standby, breaker not open).",
            labels=["replica"],
        )
        reads = CounterMetricFamily(
            "repogate_replica_reads", "Reads a replica served.", labels=["replica"]
        )
        for label, state in self._replicas.status().items():
            # A replica never seen caught up: reported as a large finite lag.
            lag.add_metric([label], min(state["lag"], 1e9))
            usable.add_metric([label], 1 if state["usable"] else 0)
            reads.add_metric([label], state["reads"])
        yield from (lag, usable, reads)
        yield CounterMetricFamily(
            "repogate_replica_primary_reads",
            "Reads outside transactions the primary served: least busy, or no replica fit.",
            value=self._replicas.primary_reads,
        )


def build(
    settings: Settings,
    primary: Database,
    breakers: dict[str, Breaker],
    prepare: Callable[[AsyncEngine], object],
) -> Replicas | None:
    """The replicas REPOGATE_DATABASE_REPLICA_URLS lists (None: none), each with its
    own pool (sized as the primary's), bulkheads and breaker, the breaker added to
    `breakers` (health and metrics report it); `prepare` is told of each engine
    (statement spans, the slow statement log)."""
    urls = settings.replica_urls()
    if not urls:
        return None
    replicas = []
    for url in urls:
        engine = create_engine(url, settings.engine_options())
        prepare(engine)
        label = name(url)
        breaker = breakers[f"replica {label}"] = Breaker(
            f"replica {label}", settings.breaker_policy()
        )
        replicas.append(Replica(Database(engine, settings.bulkheads()), breaker, label))
    return Replicas(primary, replicas, settings.replica_max_lag, settings.db_probe_timeout)
