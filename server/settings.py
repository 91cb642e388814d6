"""Settings, read once from REPOGATE_* environment variables."""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from repositories.database import EngineOptions
from repositories.transactions import Limits
from server.units import RetryPolicy

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(BaseSettings):
    """Every knob of the server. Field `x` is read from `REPOGATE_X`."""

    model_config = SettingsConfigDict(env_prefix="REPOGATE_", frozen=True, extra="ignore")

    listen: str = Field("127.0.0.1:50051", description="host:port or unix:/path/to.sock")
    database_url: str = "sqlite+aiosqlite:///./repogate.db"
    redis_url: str | None = None
    db_pool_size: int = Field(20, ge=1)
    db_max_overflow: int = Field(10, ge=0)
    db_pool_pre_ping: bool = True
    db_pool_recycle: int = Field(3600, description="seconds; -1 never recycles")
    db_pool_timeout: float = Field(30.0, gt=0)
    sqlite_busy_timeout_ms: int = Field(5000, ge=0)
    log_level: LogLevel = "INFO"
    shutdown_grace: float = Field(10.0, ge=0, description="seconds to drain calls on stop")
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # Signs page tokens. Unset: random per start, so tokens do not survive a restart.
    page_token_secret: str = Field(default_factory=lambda: secrets.token_urlsafe(32), min_length=16)

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

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        """Accepts plain postgresql:// and sqlite:// URLs and picks the async driver."""
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if value.startswith(plain):
                return driver + value[len(plain) :]
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None  # set but empty: no Redis, as when unset
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @model_validator(mode="after")
    def _transactions_fit(self) -> Settings:
        pool = self.db_pool_size + self.db_max_overflow
        if self.max_transactions is not None and self.max_transactions >= pool:
            raise ValueError(
                f"REPOGATE_MAX_TRANSACTIONS ({self.max_transactions}) must be below the pool "
                f"(REPOGATE_DB_POOL_SIZE + REPOGATE_DB_MAX_OVERFLOW = {pool}), or single calls "
                "could find no connection"
            )
        if self.transaction_idle_timeout > self.transaction_max_lifetime:
            raise ValueError(
                "REPOGATE_TRANSACTION_IDLE_TIMEOUT must not exceed "
                "REPOGATE_TRANSACTION_MAX_LIFETIME"
            )
        return self

    def transaction_limits(self) -> Limits:
        return Limits(
            max_open=self.max_transactions or max(1, self.db_pool_size // 2),
            idle_timeout=self.transaction_idle_timeout,
            max_lifetime=self.transaction_max_lifetime,
        )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.retry_max_attempts,
            initial_backoff=self.retry_initial_backoff,
            max_backoff=self.retry_max_backoff,
        )

    def engine_options(self) -> EngineOptions:
        return EngineOptions(
            pool_size=self.db_pool_size,
            max_overflow=self.db_max_overflow,
            pool_pre_ping=self.db_pool_pre_ping,
            pool_recycle=self.db_pool_recycle,
            pool_timeout=self.db_pool_timeout,
            sqlite_busy_timeout_ms=self.sqlite_busy_timeout_ms,
        )
