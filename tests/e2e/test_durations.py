"""Durations through a real server: one that breaks google.protobuf.Duration's rules
(nanos within ±999,999,999, with the sign of seconds) is INVALID_ARGUMENT wherever a
Duration is read: a transaction's idle_timeout and every CacheService TTL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from repogate.v1 import cache_pb2, cache_pb2_grpc, transaction_pb2, transaction_pb2_grpc
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

# (seconds, nanos) that google.protobuf.Duration does not allow.
INVALID = {
    "nanos-one-second": (10, 1_000_000_000),
    "nanos-max-int32": (10, 2**31 - 1),
    "negative-nanos-past-a-second": (-10, -1_000_000_000),
    "positive-seconds-negative-nanos": (15, -500_000_000),
    "negative-seconds-positive-nanos": (-1, 500_000_000),
    "seconds-beyond-range": (315_576_000_001, 0),
}


def calls(channel: grpc.aio.Channel, tenant: str) -> dict[str, Callable[[Any], Awaitable[Any]]]:
    """Each place a Duration is read, as a call sending `duration` there."""
    txs = transaction_pb2_grpc.TransactionServiceStub(channel)
    cache = cache_pb2_grpc.CacheServiceStub(channel)
    m = md(tenant)
    entry = cache_pb2.CacheEntry(key="k", value=b"v")
    return {
        "options.idle_timeout": lambda d: txs.BeginTransaction(
            transaction_pb2.BeginTransactionRequest(
                options=transaction_pb2.TransactionOptions(idle_timeout=d)
            ),
            metadata=m,
        ),
        "Set.ttl": lambda d: cache.Set(
            cache_pb2.SetRequest(key="k", value=b"v", ttl=d), metadata=m
        ),
        "SetMany.ttl": lambda d: cache.SetMany(
            cache_pb2.SetManyRequest(entries=[entry], ttl=d), metadata=m
        ),
        "Increment.ttl": lambda d: cache.Increment(
            cache_pb2.IncrementRequest(key="n", amount=1, ttl=d), metadata=m
        ),
        "Expire.ttl": lambda d: cache.Expire(cache_pb2.ExpireRequest(key="k", ttl=d), metadata=m),
    }


# The field each place names when it refuses.
FIELD = {
    "options.idle_timeout": "options.idle_timeout",
    "Set.ttl": "ttl",
    "SetMany.ttl": "ttl",
    "Increment.ttl": "ttl",
    "Expire.ttl": "ttl",
}


@pytest.mark.parametrize("case", INVALID)
@pytest.mark.parametrize("place", FIELD)
async def test_an_invalid_duration_is_refused_wherever_one_is_read(
    server, tenant: str, place: str, case: str
) -> None:
    seconds, nanos = INVALID[case]

    call = calls(server.channel, tenant)[place]

    error = await fails(call(duration_pb2.Duration(seconds=seconds, nanos=nanos)))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert list(error.violations) == [FIELD[place]]
    assert "google.protobuf.Duration" in error.violations[FIELD[place]]


async def test_a_valid_duration_just_inside_the_rules_is_accepted(server, tenant: str) -> None:
    """999,999,999 nanos is still less than a second."""
    duration = duration_pb2.Duration(seconds=10, nanos=999_999_999)

    tx = await calls(server.channel, tenant)["options.idle_timeout"](duration)
    await calls(server.channel, tenant)["Set.ttl"](duration)

    assert tx.idle_timeout.ToTimedelta().total_seconds() == pytest.approx(11, abs=1e-6)
    await transaction_pb2_grpc.TransactionServiceStub(server.channel).Rollback(
        transaction_pb2.RollbackRequest(transaction_id=tx.id), metadata=md(tenant)
    )
