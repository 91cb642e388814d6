"""The composition root: builds every part from Settings and owns their lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from types import TracebackType

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from repogate.v1 import (
    cache_pb2,
    cache_pb2_grpc,
    transaction_pb2,
    transaction_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)
from repositories.database import Database, create_engine
from repositories.maintenance import purge_due
from repositories.migrate import upgrade
from repositories.transactions import TransactionRegistry
from server import cache
from server.interceptors import RequestInterceptor
from server.page_tokens import PageTokens
from server.read_through import ReadThrough
from server.resources import Policy
from server.services.cache import CacheService
from server.services.transactions import TransactionService, entity_methods
from server.services.users import UserService
from server.settings import Settings
from server.units import Units

log = logging.getLogger("repogate")

USER_SERVICE = user_pb2.DESCRIPTOR.services_by_name["UserService"]
TRANSACTION_SERVICE = transaction_pb2.DESCRIPTOR.services_by_name["TransactionService"]
CACHE_SERVICE = cache_pb2.DESCRIPTOR.services_by_name["CacheService"]
# Services whose every call needs x-tenant-id.
TENANT_SCOPED = (USER_SERVICE.full_name, TRANSACTION_SERVICE.full_name, CACHE_SERVICE.full_name)


class Repogate:
    """The server. Use as `async with Repogate(settings) as app:` or start()/stop()."""

    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.settings = settings
        self._migrate = migrate
        self._server: aio.Server | None = None
        self._db: Database | None = None
        self._health = health.aio.HealthServicer()
        self._purger: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.units: Units | None = None
        self.cache: cache.CacheBackend | None = None
        self.read_through: ReadThrough | None = None
        self.address = ""

    async def start(self) -> None:
        s = self.settings
        self._db = Database(create_engine(s.database_url, s.engine_options()))
        if self._migrate:
            await upgrade(self._db.engine)
        server = aio.server(
            interceptors=[RequestInterceptor(TENANT_SCOPED)],
            options=[
                ("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", s.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.cache = cache.build(s)
        self.read_through = read_through = ReadThrough(
            cache.ResilientCache(self.cache), s.cache_ttl, enabled=s.cache_entities
        )
        forget = read_through.forget
        transactions = TransactionRegistry(self._db, s.transaction_limits(), on_commit=forget)
        self.units = units = Units(self._db, transactions, s.retry_policy(), on_commit=forget)
        users = UserService(units, PageTokens(s.page_token_secret), _policy(s), read_through)
        user_pb2_grpc.add_UserServiceServicer_to_server(users, server)
        transaction_pb2_grpc.add_TransactionServiceServicer_to_server(
            TransactionService(units, entity_methods([(USER_SERVICE, users)])), server
        )
        cache_pb2_grpc.add_CacheServiceServicer_to_server(
            CacheService(self.cache, PageTokens(s.page_token_secret), cache.limits(s)), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*TENANT_SCOPED, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self.address = _bind(server, s.listen)
        self._server = server
        await server.start()
        for name in ("", *TENANT_SCOPED):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if s.purge_interval > 0:
            self._purger = asyncio.create_task(self._purge_every(s.purge_interval, self._db))
        self._reaper = asyncio.create_task(transactions.reap_forever())
        log.info("repogate listening on %s (%s)", self.address, self._db.dialect)

    async def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING, stops accepting, drains calls for `grace` seconds, rolls back
        open transactions, closes pools."""
        grace = self.settings.shutdown_grace if grace is None else grace
        await self._health.enter_graceful_shutdown()
        for task in (self._purger, self._reaper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._purger = self._reaper = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self.cache is not None:
            await self.cache.close()
            self.cache = None
        if self.units is not None:
            # After the drain: no call can be using a transaction now.
            await self.units.transactions.close()
            self.units = None
        if self._db is not None:
            await self._db.dispose()
            self._db = None

    @staticmethod
    async def _purge_every(interval: float, db: Database) -> None:
        """Purges due rows now and then; a failed run is logged and retried next time."""
        while True:
            await asyncio.sleep(interval)
            try:
                await purge_due(db)
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
    )


def _bind(server: aio.Server, listen: str) -> str:
    """Binds `listen`; returns the address actually bound (port 0 resolved)."""
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {listen}: {exc}") from exc
    if listen.startswith("unix:"):
        return listen
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    host = listen.rsplit(":", 1)[0]
    return f"{host}:{port}"
