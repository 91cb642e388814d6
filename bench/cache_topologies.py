"""A cache hit's cost in this process, by Redis topology: the read-through's GET of a
300-byte entry, 32 callers at once on uvloop, through each backend Repogate builds.

Starts its own 3-primary cluster and a Sentinel setup (tests/redis_topologies.py, on
free ports, stopped after) beside the single Redis at --redis-url. Prints, per
backend, this process's CPU per GET (user + system: what a Repogate process pays,
Redis's own CPU apart) and GETs a second, alternating the backends `--rounds` times.

    python -m bench.cache_topologies [--redis-url redis://127.0.0.1:6379/9]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from collections.abc import Callable

import uvloop

from server.cache.backend import CacheBackend
from server.cache.cluster import ClusterBackend
from server.cache.redis import RedisBackend
from server.cache.sentinel import SentinelBackend
from server.cache.tagged import HashTagged
from tests import redis_topologies

GETS, CALLERS = 20_000, 32
KEY = "rg:v1:e:users:1:bench-t0:00000000-0000-0000-0000-000000000000"


async def measure(backend: CacheBackend) -> tuple[float, float]:
    """(µs of this process's CPU per GET, GETs a second)."""
    await backend.set(KEY, b"x" * 300, 600)

    async def caller(count: int) -> None:
        for _ in range(count):
            await backend.get(KEY)

    await caller(200)  # connections opened, slot map known
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.gather(*(caller(GETS // CALLERS) for _ in range(CALLERS)))
    after, ended = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    await backend.delete([KEY])
    await backend.close()
    return cpu / GETS * 1e6, GETS / (ended - started)


async def run(redis_url: str, rounds: int) -> None:
    with redis_topologies.cluster() as cluster, redis_topologies.sentinel(1) as sentinel:
        backends: dict[str, Callable[[], CacheBackend]] = {
            "one Redis (pipelined connection)": lambda: RedisBackend(redis_url, timeout=2),
            "one Redis (redis-py pool)": lambda: RedisBackend(
                redis_url, timeout=2, pipelined=False
            ),
            "Sentinel (master_for)": lambda: SentinelBackend(sentinel.url, timeout=2),
            "Redis Cluster (RedisCluster)": lambda: HashTagged(
                ClusterBackend(cluster.url, timeout=2)
            ),
        }
        for round_ in range(1, rounds + 1):
            for name, build in backends.items():
                cpu, rate = await measure(build())
                print(f"round {round_}  {name:34s} {cpu:6.1f} µs CPU/GET {rate:9,.0f} GET/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    uvloop.run(run(args.redis_url, args.rounds))


if __name__ == "__main__":
    main()
