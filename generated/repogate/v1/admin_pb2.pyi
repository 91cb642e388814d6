import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATUS_UNSPECIFIED: _ClassVar[HealthStatus]
    HEALTH_STATUS_HEALTHY: _ClassVar[HealthStatus]
    HEALTH_STATUS_DEGRADED: _ClassVar[HealthStatus]
    HEALTH_STATUS_UNHEALTHY: _ClassVar[HealthStatus]

class BreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_STATE_UNSPECIFIED: _ClassVar[BreakerState]
    BREAKER_STATE_CLOSED: _ClassVar[BreakerState]
    BREAKER_STATE_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_HALF_OPEN: _ClassVar[BreakerState]

class ProfileSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROFILE_SOURCE_UNSPECIFIED: _ClassVar[ProfileSource]
    PROFILE_SOURCE_PG_STAT_STATEMENTS: _ClassVar[ProfileSource]
    PROFILE_SOURCE_REPOGATE: _ClassVar[ProfileSource]

class ShapeVerdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHAPE_VERDICT_UNSPECIFIED: _ClassVar[ShapeVerdict]
    SHAPE_VERDICT_SERVED: _ClassVar[ShapeVerdict]
    SHAPE_VERDICT_INDEX_UNUSED: _ClassVar[ShapeVerdict]
    SHAPE_VERDICT_NEEDS_INDEX: _ClassVar[ShapeVerdict]
    SHAPE_VERDICT_NOT_INDEXABLE: _ClassVar[ShapeVerdict]
HEALTH_STATUS_UNSPECIFIED: HealthStatus
HEALTH_STATUS_HEALTHY: HealthStatus
HEALTH_STATUS_DEGRADED: HealthStatus
HEALTH_STATUS_UNHEALTHY: HealthStatus
BREAKER_STATE_UNSPECIFIED: BreakerState
BREAKER_STATE_CLOSED: BreakerState
BREAKER_STATE_OPEN: BreakerState
BREAKER_STATE_HALF_OPEN: BreakerState
PROFILE_SOURCE_UNSPECIFIED: ProfileSource
PROFILE_SOURCE_PG_STAT_STATEMENTS: ProfileSource
PROFILE_SOURCE_REPOGATE: ProfileSource
SHAPE_VERDICT_UNSPECIFIED: ShapeVerdict
SHAPE_VERDICT_SERVED: ShapeVerdict
SHAPE_VERDICT_INDEX_UNUSED: ShapeVerdict
SHAPE_VERDICT_NEEDS_INDEX: ShapeVerdict
SHAPE_VERDICT_NOT_INDEXABLE: ShapeVerdict

class GetPoolStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PoolStatus(_message.Message):
    __slots__ = ("dialect", "size", "checked_in", "checked_out", "overflow", "max_overflow", "open_transactions")
    DIALECT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKED_IN_FIELD_NUMBER: _ClassVar[int]
    CHECKED_OUT_FIELD_NUMBER: _ClassVar[int]
    OVERFLOW_FIELD_NUMBER: _ClassVar[int]
    MAX_OVERFLOW_FIELD_NUMBER: _ClassVar[int]
    OPEN_TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    dialect: str
    size: int
    checked_in: int
    checked_out: int
    overflow: int
    max_overflow: int
    open_transactions: int
    def __init__(self, dialect: _Optional[str] = ..., size: _Optional[int] = ..., checked_in: _Optional[int] = ..., checked_out: _Optional[int] = ..., overflow: _Optional[int] = ..., max_overflow: _Optional[int] = ..., open_transactions: _Optional[int] = ...) -> None: ...

class CheckHealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DependencyHealth(_message.Message):
    __slots__ = ("name", "reachable", "round_trip", "breaker", "error", "backend")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    ROUND_TRIP_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    name: str
    reachable: bool
    round_trip: _duration_pb2.Duration
    breaker: BreakerState
    error: str
    backend: str
    def __init__(self, name: _Optional[str] = ..., reachable: _Optional[bool] = ..., round_trip: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., breaker: _Optional[_Union[BreakerState, str]] = ..., error: _Optional[str] = ..., backend: _Optional[str] = ...) -> None: ...

class HealthReport(_message.Message):
    __slots__ = ("status", "dependencies")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    status: HealthStatus
    dependencies: _containers.RepeatedCompositeFieldContainer[DependencyHealth]
    def __init__(self, status: _Optional[_Union[HealthStatus, str]] = ..., dependencies: _Optional[_Iterable[_Union[DependencyHealth, _Mapping]]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MethodStats(_message.Message):
    __slots__ = ("method", "count", "server_errors", "p50", "p95", "p99")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SERVER_ERRORS_FIELD_NUMBER: _ClassVar[int]
    P50_FIELD_NUMBER: _ClassVar[int]
    P95_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    method: str
    count: int
    server_errors: int
    p50: _duration_pb2.Duration
    p95: _duration_pb2.Duration
    p99: _duration_pb2.Duration
    def __init__(self, method: _Optional[str] = ..., count: _Optional[int] = ..., server_errors: _Optional[int] = ..., p50: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p95: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p99: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CacheStats(_message.Message):
    __slots__ = ("backend", "hits", "misses", "hit_rate", "errors", "evictions", "skipped")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    backend: str
    hits: int
    misses: int
    hit_rate: float
    errors: int
    evictions: int
    skipped: int
    def __init__(self, backend: _Optional[str] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., hit_rate: _Optional[float] = ..., errors: _Optional[int] = ..., evictions: _Optional[int] = ..., skipped: _Optional[int] = ...) -> None: ...

class TransactionStats(_message.Message):
    __slots__ = ("open", "oldest_age", "begun", "committed", "rolled_back", "expired", "aborted", "unknown")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    OLDEST_AGE_FIELD_NUMBER: _ClassVar[int]
    BEGUN_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    open: int
    oldest_age: _duration_pb2.Duration
    begun: int
    committed: int
    rolled_back: int
    expired: int
    aborted: int
    unknown: int
    def __init__(self, open: _Optional[int] = ..., oldest_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., begun: _Optional[int] = ..., committed: _Optional[int] = ..., rolled_back: _Optional[int] = ..., expired: _Optional[int] = ..., aborted: _Optional[int] = ..., unknown: _Optional[int] = ...) -> None: ...

class SlowStatement(_message.Message):
    __slots__ = ("sql", "duration", "finish_time")
    SQL_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    sql: str
    duration: _duration_pb2.Duration
    finish_time: _timestamp_pb2.Timestamp
    def __init__(self, sql: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ServerStats(_message.Message):
    __slots__ = ("methods", "cache", "transactions", "retries", "slow_statements")
    METHODS_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    SLOW_STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedCompositeFieldContainer[MethodStats]
    cache: CacheStats
    transactions: TransactionStats
    retries: int
    slow_statements: _containers.RepeatedCompositeFieldContainer[SlowStatement]
    def __init__(self, methods: _Optional[_Iterable[_Union[MethodStats, _Mapping]]] = ..., cache: _Optional[_Union[CacheStats, _Mapping]] = ..., transactions: _Optional[_Union[TransactionStats, _Mapping]] = ..., retries: _Optional[int] = ..., slow_statements: _Optional[_Iterable[_Union[SlowStatement, _Mapping]]] = ...) -> None: ...

class GetQueryProfileRequest(_message.Message):
    __slots__ = ("max_statements",)
    MAX_STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    max_statements: int
    def __init__(self, max_statements: _Optional[int] = ...) -> None: ...

class StatementProfile(_message.Message):
    __slots__ = ("sql", "calls", "total_time", "mean_time", "max_time")
    SQL_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TIME_FIELD_NUMBER: _ClassVar[int]
    MEAN_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_TIME_FIELD_NUMBER: _ClassVar[int]
    sql: str
    calls: int
    total_time: _duration_pb2.Duration
    mean_time: _duration_pb2.Duration
    max_time: _duration_pb2.Duration
    def __init__(self, sql: _Optional[str] = ..., calls: _Optional[int] = ..., total_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., mean_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class QueryProfile(_message.Message):
    __slots__ = ("source", "statements", "fallback_reason", "since")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    source: ProfileSource
    statements: _containers.RepeatedCompositeFieldContainer[StatementProfile]
    fallback_reason: str
    since: _timestamp_pb2.Timestamp
    def __init__(self, source: _Optional[_Union[ProfileSource, str]] = ..., statements: _Optional[_Iterable[_Union[StatementProfile, _Mapping]]] = ..., fallback_reason: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecommendIndexesRequest(_message.Message):
    __slots__ = ("max_shapes",)
    MAX_SHAPES_FIELD_NUMBER: _ClassVar[int]
    max_shapes: int
    def __init__(self, max_shapes: _Optional[int] = ...) -> None: ...

class QueryShape(_message.Message):
    __slots__ = ("resource", "table", "method", "filter", "order_by", "calls", "access", "verdict", "index", "estimated_cost")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_FIELD_NUMBER: _ClassVar[int]
    resource: str
    table: str
    method: str
    filter: str
    order_by: str
    calls: int
    access: str
    verdict: ShapeVerdict
    index: str
    estimated_cost: float
    def __init__(self, resource: _Optional[str] = ..., table: _Optional[str] = ..., method: _Optional[str] = ..., filter: _Optional[str] = ..., order_by: _Optional[str] = ..., calls: _Optional[int] = ..., access: _Optional[str] = ..., verdict: _Optional[_Union[ShapeVerdict, str]] = ..., index: _Optional[str] = ..., estimated_cost: _Optional[float] = ...) -> None: ...

class IndexRecommendation(_message.Message):
    __slots__ = ("table", "name", "columns", "create_index", "schema_option", "shapes")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    CREATE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_OPTION_FIELD_NUMBER: _ClassVar[int]
    SHAPES_FIELD_NUMBER: _ClassVar[int]
    table: str
    name: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    create_index: str
    schema_option: str
    shapes: _containers.RepeatedCompositeFieldContainer[QueryShape]
    def __init__(self, table: _Optional[str] = ..., name: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ..., create_index: _Optional[str] = ..., schema_option: _Optional[str] = ..., shapes: _Optional[_Iterable[_Union[QueryShape, _Mapping]]] = ...) -> None: ...

class IndexRecommendations(_message.Message):
    __slots__ = ("dialect", "recommendations", "shapes")
    DIALECT_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    SHAPES_FIELD_NUMBER: _ClassVar[int]
    dialect: str
    recommendations: _containers.RepeatedCompositeFieldContainer[IndexRecommendation]
    shapes: _containers.RepeatedCompositeFieldContainer[QueryShape]
    def __init__(self, dialect: _Optional[str] = ..., recommendations: _Optional[_Iterable[_Union[IndexRecommendation, _Mapping]]] = ..., shapes: _Optional[_Iterable[_Union[QueryShape, _Mapping]]] = ...) -> None: ...
