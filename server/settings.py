"""Settings, read once from REPOGATE_* environment variables."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from repositories.bulkheads import Bulkheads
from repositories.database import EngineOptions
from repositories.drivers import connect_arguments
from repositories.transaction_ids import ADDRESS_MAX
from repositories.transactions import Limits
from server.breaker import BreakerPolicy
from server.cache import topology
from server.settings_security import SecuritySettings
from server.settings_sources import FROM_FILE, StrictEnvSource, read_files
from server.units import RetryPolicy

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(SecuritySettings):
    """Every knob of the server. Field `x` is read from `REPOGATE_X`; one marked FROM_FILE
    also from the file named by `REPOGATE_X_FILE`. Any other REPOGATE_* name is an error
    (server/settings_sources.py)."""

    # Errors never quote input values: some are secrets.
    model_config = SettingsConfigDict(
        env_prefix="REPOGATE_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    listen: str = Field("127.0.0.1:50051", description="host:port or unix:/path/to.sock")
    database_url: str = Field("sqlite+aiosqlite:///./repogate.db", json_schema_extra=FROM_FILE)
    # Where a PostgreSQL process follows the change log, on a session of its own (with
    # Redis it holds a session lock there, which a pooler in transaction mode cannot
    # keep). Unset: database_url.
    database_session_url: str | None = Field(None, json_schema_extra=FROM_FILE)
    # PostgreSQL streaming standbys that serve reads outside transactions, comma-separated
    # (docs/replicas.md); each is taken out while more than replica_max_lag seconds behind.
    database_replica_urls: str = Field("", json_schema_extra=FROM_FILE)
    replica_max_lag: float = Field(5.0, gt=0, le=3600)
    # redis://, rediss://, unix://; redis+cluster://host:port[,...]; or
    # redis+sentinel://host:port[,...]/service (server/cache/topology.py).
    redis_url: str | None = Field(None, json_schema_extra=FROM_FILE)
    # Resources declared in protobuf (docs/schema.md): a directory of .proto files, or
    # a FileDescriptorSet (`buf build -o schema.binpb`). Unset: the built-in ones only.
    # (`schema` would shadow pydantic's BaseModel.schema.)
    schema_path: str | None = Field(
        None, validation_alias=AliasChoices("REPOGATE_SCHEMA", "schema_path")
    )
    # Python modules (import paths or .py file paths, comma-separated) whose `extensions`
    # serve the schema's methods that are not standard ones (docs/schema.md#extensions).
    extensions: str = ""
    # Sized for a sidecar, one of many processes on one PostgreSQL: 10 connections at
    # most, kept open rather than opened and closed per burst (docs/fleet.md).
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(0, ge=0)
    db_pool_pre_ping: bool = True
    db_pre_ping_after: float = Field(
        1.0, ge=0, description="seconds idle in the pool before a connection is pinged"
    )
    db_pool_recycle: int = Field(3600, description="seconds; -1 never recycles")
    db_pool_timeout: float = Field(30.0, gt=0)
    sqlite_busy_timeout_ms: int = Field(5000, ge=0)
    # PostgreSQL is reached through PgBouncer in transaction pooling mode (docs/pgbouncer.md).
    db_pgbouncer: bool = False
    log_level: LogLevel = "INFO"
    shutdown_grace: float = Field(10.0, ge=0, description="seconds to drain calls on stop")
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # Signs page tokens. Unset: random per start, so tokens do not survive a restart.
    page_token_secret: str = Field(
        default_factory=lambda: secrets.token_urlsafe(32),
        min_length=16,
        json_schema_extra=FROM_FILE,
    )

    # Soft-deleted rows are purged this many seconds after deletion; 0 keeps them.
    soft_delete_retention: int = Field(0, ge=0)
    # How long a request id is remembered (AIP-155).
    request_id_ttl: int = Field(24 * 3600, ge=60)
    # How often the purge job runs, in seconds; 0 turns it off.
    purge_interval: float = Field(300.0, ge=0)
    # ESTIMATED counts are exact while the planner expects fewer rows than this.
    count_estimate_threshold: int = Field(10_000, ge=0)

    # Transactions across calls: rolled back after this long unused, or this long open.
    transaction_idle_timeout: float = Field(30.0, gt=0)
    transaction_max_lifetime: float = Field(600.0, gt=0)
    # Open transactions at most. Unset: half the pool, so single calls always find a
    # connection while transactions hold theirs.
    max_transactions: int | None = Field(None, ge=1)
    # Single calls are retried on conflicts: this many attempts in all, waits drawn
    # from [0, min(max, initial * 2^n)] seconds, and never past the call's deadline.
    retry_max_attempts: int = Field(5, ge=1)
    retry_initial_backoff: float = Field(0.01, gt=0)
    retry_max_backoff: float = Field(1.0, gt=0)
    # Seconds a call without a deadline may spend on the database; 0: no bound.
    db_statement_timeout: float = Field(30.0, ge=0)
    # Seconds an Aggregate<Rs> or Rank<R> call's database work may take, whatever deadline
    # the call set (a shorter one still applies); 0: only the bounds above.
    aggregate_timeout: float = Field(10.0, ge=0)
    # How many groups, in order, an Aggregate<Rs> call's pages may reach (docs/aggregation.md).
    aggregate_max_groups: int = Field(10_000, ge=1)
    # Connections one tenant's calls and transactions may hold at once (its bulkhead).
    # Unset: half the pool (size + overflow), so one tenant's pile-up always leaves the
    # other half to the rest; 0: no cap (one tenant, as a sidecar often serves).
    tenant_max_concurrency: int | None = Field(None, ge=0)
    # Seconds a call beyond its tenant's cap keeps waiting in the tenant's line while none
    # of the tenant's calls finishes, before RESOURCE_EXHAUSTED; 0 refuses at once.
    tenant_queue_timeout: float = Field(0.5, ge=0)
    # Seconds the database's probe (a fresh connection and SELECT 1) may take, when calls
    # ran out of time or the breaker is half-open, before it counts as a fault.
    db_probe_timeout: float = Field(1.0, gt=0)
    # Circuit breakers (database, cache), as Dapr's: open after this many server faults
    # in a row, stay open this many seconds, then let this many probes through.
    breaker_trip_after: int = Field(5, ge=1)
    breaker_open_for: float = Field(10.0, gt=0)
    breaker_probes: int = Field(1, ge=1)
    # Server processes sharing the listen port (`serve --workers`); reuse_port lets a
    # process bind a port others hold, as each worker does.
    workers: int = Field(1, ge=1, le=64)
    reuse_port: bool = False
    # Where the other processes of a fleet reach this one with the calls of its
    # transactions that land on them: host:port or unix:path. Unset: the peer listen
    # address, else the listen address, a wildcard host replaced by this host's address.
    advertise_address: str | None = None
    # One more address to listen on, for peers' forwarded calls (the supervisor gives
    # each worker one of its own).
    peer_listen: str | None = None
    # Statements slower than this (milliseconds) are listed by AdminService.GetStats.
    slow_statement_ms: float = Field(100.0, ge=0)

    # Cache
    # Seconds a Redis call may take (connect or reply) before the cache counts as down.
    cache_timeout: float = Field(0.25, gt=0)
    # Connections to Redis at most; calls beyond wait up to cache_timeout for one.
    cache_max_connections: int = Field(100, ge=1)
    # Entries the in-memory cache (no redis_url) holds before evicting the least recent.
    cache_max_entries: int = Field(10_000, ge=1)
    # Seconds an entity read-through entry lives.
    cache_ttl: int = Field(300, ge=1)
    # Read-through caching of every entity's Get. Turn it off when several processes
    # share a database but no Redis: each would keep its own, unaware of the others' writes.
    cache_entities: bool = True
    # The longest TTL a CacheService client may set, in seconds; also the TTL of a key
    # set without one, so that every key expires.
    cache_max_ttl: int = Field(24 * 3600, ge=1)
    # Largest CacheService value.
    cache_max_value_bytes: int = Field(1024 * 1024, ge=1)

    # Tracing and metrics
    # Where spans go: nowhere (nothing is traced), stdout, or the OTLP collector below.
    trace_exporter: Literal["none", "console", "otlp"] = "none"
    # The OTLP/gRPC collector: http:// for plaintext, https:// for TLS.
    otlp_endpoint: str | None = None
    # host:port of the Prometheus endpoint (/metrics); unset: no metrics are kept.
    metrics_listen: str | None = None

    # One JSON line per call on stderr, beside the server log (from the CLI).
    access_log: bool = True

    # The files secrets were read from (REPOGATE_X_FILE), by field name.
    _secret_files: dict[str, Path] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        files: dict[str, Path] = {}
        token = read_files.set(files)
        try:
            super().__init__(**values)
        finally:
            read_files.reset(token)
        self._secret_files = {k: v for k, v in files.items() if k not in values}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, StrictEnvSource(settings_cls), file_secret_settings

    def secret_file(self, field: str) -> Path | None:
        """The file a secret was read from (REPOGATE_<FIELD>_FILE), if it was."""
        return self._secret_files.get(field)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url", "database_session_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        """Accepts plain postgresql:// and sqlite:// URLs and picks the async driver."""
        if value is None:
            return None
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if value.startswith(plain):
                return driver + value[len(plain) :]
        return value

    @model_validator(mode="after")
    def _session_on_postgresql(self) -> Settings:
        if self.database_session_url is None:
            return self
        if not self.database_url.startswith("postgresql+asyncpg://"):
            raise ValueError("REPOGATE_DATABASE_SESSION_URL is for a PostgreSQL database only")
        if not self.database_session_url.startswith("postgresql+asyncpg://"):
            raise ValueError("REPOGATE_DATABASE_SESSION_URL must be a postgresql:// URL")
        try:
            connect_arguments(self.database_session_url)
        except ValueError as exc:
            raise ValueError(
                str(exc).replace("REPOGATE_DATABASE_URL", "REPOGATE_DATABASE_SESSION_URL")
            ) from None
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None  # set but empty: no Redis, as when unset
        topology.parse(value)  # its ValueError says what is wrong
        return value

    @field_validator("trace_exporter", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_url(cls, value: str | None) -> str | None:
        if not value:
            return None  # set but empty: as when unset
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// (plaintext) or https:// (TLS) URL")
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if not value:
            return None
        _, colon, port = value.rpartition(":")
        if not (colon and port.isdigit() and int(port) <= 65535):
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464")
        return value

    @field_validator("advertise_address", "peer_listen")
    @classmethod
    def _peer_address(cls, value: str | None) -> str | None:
        if not value:
            return None
        if len(value.encode()) > ADDRESS_MAX:
            raise ValueError(f"must be at most {ADDRESS_MAX} bytes")
        if value.startswith("unix:"):
            if len(value) == len("unix:"):
                raise ValueError("must name a socket path after unix:")
            return value
        host, colon, port = value.rpartition(":")
        if not (host and colon and port.isdigit() and int(port) <= 65535):
            raise ValueError("must be host:port or unix:/path/to.sock")
        return value

    @model_validator(mode="after")
    def _driver_takes_the_url(self) -> Settings:
        """The URL's query parameters are ones the driver takes, with values it can use,
        and that work with REPOGATE_DB_PGBOUNCER: a settings error now, not a traceback
        at the first connect."""
        connect_arguments(self.database_url, pgbouncer=self.db_pgbouncer)
        return self

    @model_validator(mode="after")
    def _replicas_of_postgresql(self) -> Settings:
        if self.database_replica_urls.strip():
            # Imported here, as below: Settings stays a leaf.
            from server.replica_urls import check

            check(self)
        return self

    def replica_urls(self) -> tuple[str, ...]:
        """REPOGATE_DATABASE_REPLICA_URLS, each with its async driver."""
        urls = (url.strip() for url in self.database_replica_urls.split(","))
        return tuple(self._async_driver(url) or "" for url in urls if url)

    @model_validator(mode="after")
    def _pgbouncer_leaves_the_feed_a_session(self) -> Settings:
        if self.database_session_url is None and self.db_pgbouncer and self.cache_entities:
            # The change log is followed on a connection of the process's own, with
            # session settings (and, with Redis, a session-level lock) that a pooler
            # in transaction mode does not keep.
            raise ValueError(
                "REPOGATE_DB_PGBOUNCER=true needs REPOGATE_DATABASE_SESSION_URL: a "
                "connection straight to PostgreSQL (or through a session-mode pool) on "
                "which each process follows the change log that keeps caches coherent; "
                "or set REPOGATE_CACHE_ENTITIES=false"
            )
        return self

    @model_validator(mode="after")
    def _otlp_has_endpoint(self) -> Settings:
        if self.trace_exporter == "otlp" and self.otlp_endpoint is None:
            raise ValueError("REPOGATE_TRACE_EXPORTER=otlp needs REPOGATE_OTLP_ENDPOINT")
        return self

    @model_validator(mode="after")
    def _workers_share_a_port_and_a_cache(self) -> Settings:
        if self.workers == 1:
            return self
        if self.listen.startswith("unix:") or self.listen.endswith(":0"):
            raise ValueError("REPOGATE_WORKERS above 1 needs a TCP listen address with a port")
        if self.advertise_address is not None and (
            self.advertise_address.startswith("unix:") or self.advertise_address.endswith(":0")
        ):
            raise ValueError(
                "REPOGATE_WORKERS above 1 takes a REPOGATE_ADVERTISE_ADDRESS host:port with a "
                "port (worker i advertises port + i), or none (each advertises its own socket)"
            )
        if not self.redis_url:
            raise ValueError(
                "REPOGATE_WORKERS above 1 needs REPOGATE_REDIS_URL: each worker would otherwise "
                "keep a cache of its own, and clients would see whichever their call reached"
            )
        return self

    @model_validator(mode="after")
    def _transactions_fit(self) -> Settings:
        pool = self.db_pool_size + self.db_max_overflow
        if self.max_transactions is not None and self.max_transactions >= pool:
            raise ValueError(
                f"REPOGATE_MAX_TRANSACTIONS ({self.max_transactions}) must be below the pool "
                f"(REPOGATE_DB_POOL_SIZE + REPOGATE_DB_MAX_OVERFLOW = {pool}), or single calls "
                "could find no connection"
            )
        if self.tenant_max_concurrency is not None and self.tenant_max_concurrency > pool:
            raise ValueError(
                f"REPOGATE_TENANT_MAX_CONCURRENCY ({self.tenant_max_concurrency}) must not "
                f"exceed the pool (REPOGATE_DB_POOL_SIZE + REPOGATE_DB_MAX_OVERFLOW = {pool}); "
                "0 turns the cap off"
            )
        if self.transaction_idle_timeout > self.transaction_max_lifetime:
            raise ValueError(
                "REPOGATE_TRANSACTION_IDLE_TIMEOUT must not exceed "
                "REPOGATE_TRANSACTION_MAX_LIFETIME"
            )
        return self

    @field_validator("database_session_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    def transaction_limits(self) -> Limits:
        return Limits(
            max_open=self.max_transactions or max(1, self.db_pool_size // 2),
            idle_timeout=self.transaction_idle_timeout,
            max_lifetime=self.transaction_max_lifetime,
        )

    def bulkheads(self) -> Bulkheads:
        """Each tenant's cap on connections; see tenant_max_concurrency."""
        limit = self.tenant_max_concurrency
        if limit is None:
            limit = max(1, (self.db_pool_size + self.db_max_overflow) // 2)
        return Bulkheads(limit or None, self.tenant_queue_timeout)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.retry_max_attempts,
            initial_backoff=self.retry_initial_backoff,
            max_backoff=self.retry_max_backoff,
            statement_timeout=self.db_statement_timeout or None,
        )

    def breaker_policy(self) -> BreakerPolicy:
        return BreakerPolicy(
            trip_after=self.breaker_trip_after,
            open_for=self.breaker_open_for,
            probes=self.breaker_probes,
        )

    def engine_options(self) -> EngineOptions:
        return EngineOptions(
            pool_size=self.db_pool_size,
            max_overflow=self.db_max_overflow,
            pool_pre_ping=self.db_pool_pre_ping,
            pre_ping_after=self.db_pre_ping_after,
            pool_recycle=self.db_pool_recycle,
            pool_timeout=self.db_pool_timeout,
            sqlite_busy_timeout_ms=self.sqlite_busy_timeout_ms,
            pgbouncer=self.db_pgbouncer,
        )
