"""The machine and the versions a run was measured with."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import asyncpg
import psutil
import redis

from bench import h2load

PACKAGES = ("grpcio", "protobuf", "asyncpg", "SQLAlchemy", "redis", "uvloop", "psutil")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


async def postgres_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        settings = await conn.fetchrow(
            "SELECT current_setting('server_version') AS v, current_setting('max_connections') AS m"
        )
    finally:
        await conn.close()
    return f"{settings['v']} (max_connections {settings['m']})"


def redis_version(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


async def collect(dsn: str, redis_url: str) -> dict[str, object]:
    memory = psutil.virtual_memory()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gib": round(memory.total / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions(),
        "postgresql": await postgres_version(dsn),
        "redis_server": redis_version(redis_url),
        "h2load": h2load.version(),
    }
