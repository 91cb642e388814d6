"""The composition root: builds every part from Settings and owns their lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from types import TracebackType

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace.export import SpanExporter
from sqlalchemy import MetaData

from repogate.v1 import (
    admin_pb2_grpc,
    cache_pb2_grpc,
    job_pb2_grpc,
    message_pb2_grpc,
    session_pb2_grpc,
    transaction_pb2_grpc,
    user_pb2_grpc,
)
from repositories.database import Database, create_engine
from repositories.maintenance import purge_due
from repositories.profiler import SlowStatements
from repositories.transaction_ids import TransactionIds
from repositories.transactions import TransactionRegistry
from schema.declared import Declared
from server import access, auth, cache, coherence, consistency, peers, replicas, tls
from server.answers import Answers
from server.breaker import Breaker, State
from server.call_stats import CallStats
from server.drain import Drain
from server.forwarding import Forwarder, ForwardingInterceptor
from server.handlers import generic_only
from server.interceptors import RequestInterceptor
from server.metrics import Metrics
from server.page_tokens import PageTokens
from server.read_through import ReadThrough
from server.reload import Reloadable, Reloader
from server.resource_types import Policy
from server.resources import StandardMethods
from server.served import (
    ADMIN_SERVICE,
    DATABASE_SERVICES,
    HEALTH_NAMES,
    JOB_SERVICE,
    MESSAGE_SERVICE,
    NEEDS_DATABASE,
    SESSION_SERVICE,
    TENANT_SCOPED,
    USER_SERVICE,
)
from server.served_schema import declared_services
from server.services.admin import AdminService, Observed
from server.services.cache import CacheService
from server.services.jobs import JobService
from server.services.messages import MessageService
from server.services.sessions import SessionService
from server.services.transactions import TransactionService, entity_methods
from server.services.users import UserService
from server.settings import Settings
from server.tracing import Tracing
from server.units import Units

log = logging.getLogger("repogate")

SERVING = health_pb2.HealthCheckResponse.SERVING
# Seconds between looks at the database breaker.
WATCH_INTERVAL = 0.5


class Repogate:
    """The server. Use as `async with Repogate(settings) as app:` or start()/stop()."""

    def __init__(
        self, settings: Settings, *, migrate: bool = True, span_exporter: SpanExporter | None = None
    ) -> None:
        """`span_exporter` receives every span, whatever REPOGATE_TRACE_EXPORTER says (tests)."""
        self.settings = settings
        self._migrate = migrate
        self._span_exporter = span_exporter
        self.tracing: Tracing | None = None
        self.metrics: Metrics | None = None
        self._server: aio.Server | None = None
        self._db: Database | None = None
        self._health = health.aio.HealthServicer()
        self._purger: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._reloader = Reloader([], 0)
        self._replica_prober: asyncio.Task[None] | None = None
        self.replicas: replicas.Replicas | None = None
        self._peers: peers.Peers | None = None
        self.breakers: dict[str, Breaker] = {}
        self.calls = CallStats()
        self._drain = Drain()
        self.units: Units | None = None
        self.cache: cache.CacheBackend | None = None
        self.read_through: ReadThrough | None = None
        self.feed: coherence.ChangeFeed | None = None
        self._needs_database: tuple[str, ...] = NEEDS_DATABASE
        # The resources of REPOGATE_SCHEMA, once started with one.
        self.declared: Declared | None = None
        self.address = ""

    async def start(self) -> None:
        s = self.settings
        auth.check_listen(s)  # before anything is built
        self.tracing = tracing = Tracing.from_settings(s, self._span_exporter)
        self.metrics = metrics = Metrics.from_settings(s)
        self.calls = metrics.calls()
        self._db = Database(
            tracing.engine(create_engine(s.database_url, s.engine_options())), s.bulkheads()
        )
        served = declared_services(s.schema_path, s.extensions)
        self.declared = served.declared if served is not None else None
        if self._migrate:
            # Imported only to migrate: Alembic adds 11 MiB to every worker's RSS.
            from repositories.migrate import upgrade

            # With a schema, its additive changes too; refused ones stop the start.
            await upgrade(self._db.engine, declared=self.declared)
        names = served.names if served is not None else ()
        scoped = (*TENANT_SCOPED, *names)
        slow = SlowStatements(s.slow_statement_ms / 1000)
        slow.attach(self._db.engine)
        self.breakers = breakers = {
            "database": Breaker("database", s.breaker_policy()),
            "cache": cache.cache_breaker(s.breaker_policy()),
        }
        # Read replicas, each breaker in `breakers`; with them, writes answer tokens.
        self.replicas = replicas.build(
            s, self._db, breakers, lambda engine: slow.attach(tracing.engine(engine))
        )
        tokens = (
            []
            if self.replicas is None
            else [consistency.Interceptor(consistency.Tokens(s.page_token_secret))]
        )
        # Transaction ids are signed with the key the fleet shares; the address in them
        # is known once the server has bound its ports.
        ids = TransactionIds(s.page_token_secret)
        self._peers = peers.Peers(peers.credentials(s), s.max_message_bytes)
        limits = s.transaction_limits()
        forwarder = Forwarder(ids, self._peers, self._db, limits.max_lifetime)
        authenticator = auth.authenticator(s)
        certificates = tls.Certificates.from_settings(s)
        rotating: list[Reloadable] = [*auth.reloadables(authenticator)]
        if certificates is not None:
            rotating += [certificates, peers.Rotating(s, self._peers)]
        self._reloader = Reloader(rotating, s.reload_interval)
        server = aio.server(
            # Outermost first.
            interceptors=[
                # Counts every call (self.calls), for GetStats and the metrics, and
                # gives it its span, which thus has the status the client gets.
                RequestInterceptor(
                    scoped, calls=self.calls, drain=self._drain, spans=tracing.calls()
                ),
                # Inside the RequestInterceptor: its refusals become AIP-193 statuses there.
                *([] if authenticator is None else [auth.AuthInterceptor(authenticator)]),
                *tokens,
                # Innermost: a call is authenticated here before it is forwarded, and
                # everything above sees a forwarded call as any other.
                ForwardingInterceptor(forwarder, (*DATABASE_SERVICES, *names)),
            ],
            options=[
                ("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", s.max_message_bytes),
                # Several worker processes share one port only when told to.
                ("grpc.so_reuseport", 1 if s.reuse_port else 0),
            ],
        )
        # Where services are added; the server itself is still what binds and starts.
        registry = generic_only(server)
        await cache.verify(s)
        self.cache = tracing.cache(cache.build(s), s.redis_url)
        # On PostgreSQL every process reads every committed write from the change log; its
        # own memory cache is used only while it keeps up (server/coherence.py).
        follows = s.cache_entities and self._db.dialect == "postgresql"
        self.read_through = read_through = ReadThrough(
            cache.ResilientCache(self.cache, breakers["cache"]),
            s.cache_ttl,
            enabled=s.cache_entities,
            bound=coherence.BOUND if follows and s.redis_url is None else None,
            replicated=cache.replicated(s),
        )
        if follows:
            self.feed = coherence.ChangeFeed(
                s.database_session_url or s.database_url, read_through, shared=bool(s.redis_url)
            )
        forget = read_through.forget
        transactions = TransactionRegistry(
            self._db,
            limits,
            ids=ids,
            on_commit=forget,
            on_position=None if self.replicas is None else consistency.wrote,
        )
        self.units = units = Units(
            self._db, transactions, s.retry_policy(), forget, breakers["database"], self.replicas
        )
        entity = (units, PageTokens(s.page_token_secret), _policy(s), read_through)
        users = UserService(*entity)
        user_pb2_grpc.add_UserServiceServicer_to_server(users, registry)
        sessions = SessionService(*entity)
        session_pb2_grpc.add_SessionServiceServicer_to_server(sessions, registry)
        messages = MessageService(*entity)
        message_pb2_grpc.add_MessageServiceServicer_to_server(messages, registry)
        jobs = JobService(*entity)
        job_pb2_grpc.add_JobServiceServicer_to_server(jobs, registry)
        services: list[tuple[ServiceDescriptor, object]] = [
            (USER_SERVICE, users),
            (SESSION_SERVICE, sessions),
            (MESSAGE_SERVICE, messages),
            (JOB_SERVICE, jobs),
        ]
        if served is not None:
            services += served.register(registry, lambda r: StandardMethods(r, *entity), units)
        transaction_pb2_grpc.add_TransactionServiceServicer_to_server(
            TransactionService(
                units, entity_methods(services), forwarder, Answers(s.max_message_bytes)
            ),
            registry,
        )
        cache_pb2_grpc.add_CacheServiceServicer_to_server(
            CacheService(
                self.cache, PageTokens(s.page_token_secret), cache.limits(s), breakers["cache"]
            ),
            registry,
        )
        observed = Observed(
            self._db, s.db_max_overflow, units, self.cache, breakers, self.calls, slow
        )
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminService(observed, work_timeout=s.db_statement_timeout or None), registry
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, registry)
        reflection.enable_server_reflection(
            (*scoped, ADMIN_SERVICE.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME),
            registry,
        )
        metrics.watch(
            self._db.engine,
            units,
            self.cache,
            lambda: {name: b.state.value for name, b in self.breakers.items()},
            slow,
        )
        if self.feed is not None:
            await self.feed.start()
        if self.replicas is not None:
            metrics.register(replicas.ReplicaCollector(self.replicas))
            await self.replicas.probe()  # replicas serve reads from the first call on
            self._replica_prober = asyncio.create_task(self.replicas.watch())
        credentials = None if certificates is None else certificates.credentials()
        self.address = _bind(server, s.listen, credentials)
        tracing.serving_at(self.address)
        peer_address = None
        if s.peer_listen is not None:
            # A Unix socket for peers lies in a directory only this user can open.
            private = s.peer_listen.startswith("unix:")
            peer_address = _bind(server, s.peer_listen, None if private else credentials)
        ids.address = s.advertise_address or peers.advertised(peer_address or self.address)
        self._server = server
        await server.start()
        self._needs_database = (*NEEDS_DATABASE, *names)
        for name in (*HEALTH_NAMES, *names):
            await self._health.set(name, SERVING)
        if s.purge_interval > 0:
            tables = served.declared.metadata if served is not None else None
            self._purger = asyncio.create_task(
                self._purge_every(s.purge_interval, self._db, tables)
            )
        self._reaper = asyncio.create_task(transactions.reap_forever())
        self._watcher = asyncio.create_task(self._watch_database(breakers["database"], self._db))
        self._reloader.start()
        await metrics.start()
        log.info(
            "repogate listening on %s (%s); peers reach it at %s",
            self.address,
            self._db.dialect,
            ids.address,
        )

    async def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING (every name, LIVENESS included), refuses new calls
        (UNAVAILABLE) while those in flight finish within `grace` seconds, then closes the
        port, rolls back open transactions, closes pools (see server/drain.py)."""
        grace = self.settings.shutdown_grace if grace is None else grace
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        await self._health.enter_graceful_shutdown()
        await self._reloader.stop()
        for task in (self._purger, self._reaper, self._watcher, self._replica_prober):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._purger = self._reaper = self._watcher = self._replica_prober = None
        if self._server is not None:
            await self._drain.close(max(0.0, end - loop.time()))
            # No Repogate call is left; health and reflection calls get what grace remains.
            await self._server.stop(max(0.0, end - loop.time()))
            self._server = None
        if self._peers is not None:
            await self._peers.close()
            self._peers = None
        if self.feed is not None:
            await self.feed.stop()
            self.feed = None
        if self.cache is not None:
            await self.cache.close()
            self.cache = None
        if self.units is not None:
            # After the drain: no call can be using a transaction now.
            await self.units.transactions.close()
            self.units = None
        if self.replicas is not None:
            await self.replicas.dispose()
            self.replicas = None
        if self._db is not None:
            await self._db.dispose()
            self._db = None
        # Last: the endpoint answers during the drain, and spans of drained calls are sent.
        if self.metrics is not None:
            await self.metrics.stop()
            self.metrics = None
        if self.tracing is not None:
            await self.tracing.shutdown()
            self.tracing = None
        access.flush()

    def reload(self) -> bool:
        """SIGHUP: API keys, JWT keys and certificates loaded again (see server/reload.py)."""
        return self._reloader.reload()

    async def _watch_database(self, breaker: Breaker, db: Database) -> None:
        """Keeps health in step with the database breaker, and probes the database when
        the breaker wants it: half-open, so that both recover with no traffic; closed but
        suspect (calls ran out of time), so that a database answering nothing opens it."""
        serving = True
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if breaker.wants_probe:
                with contextlib.suppress(Exception):  # the breaker counts the outcome
                    async with breaker.guard():
                        await db.probe(self.settings.db_probe_timeout)
            if (breaker.state is State.CLOSED) != serving:
                serving = not serving
                status = SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
                for name in self._needs_database:
                    await self._health.set(name, status)

    @staticmethod
    async def _purge_every(interval: float, db: Database, declared: MetaData | None) -> None:
        """Purges due rows now and then; a failed run is logged and retried next time."""
        while True:
            await asyncio.sleep(interval)
            try:
                await purge_due(db, declared=declared)
            except Exception:
                log.warning("purge failed; retrying in %ss", interval, exc_info=True)

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> Repogate:
        try:
            await self.start()
        except BaseException:
            await self.stop(0)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _policy(s: Settings) -> Policy:
    return Policy(
        retention=timedelta(seconds=s.soft_delete_retention) if s.soft_delete_retention else None,
        request_id_ttl=timedelta(seconds=s.request_id_ttl),
        estimate_threshold=s.count_estimate_threshold,
        max_message_bytes=s.max_message_bytes,
        aggregate_timeout=s.aggregate_timeout or None,
        aggregate_max_groups=s.aggregate_max_groups,
    )


def _bind(server: aio.Server, listen: str, credentials: grpc.ServerCredentials | None) -> str:
    """Binds `listen`, with TLS when given credentials; returns the address actually bound
    (port 0 resolved)."""
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {listen}: {exc}") from exc
    if listen.startswith("unix:"):
        return listen
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    host = listen.rsplit(":", 1)[0]
    return f"{host}:{port}"
