"""`python -m bench.pgbouncer_flag`: what REPOGATE_DB_PGBOUNCER costs a statement.

With the flag asyncpg's statement cache is off, so PostgreSQL parses and plans each
statement on every execution instead of reusing a prepared one; Repogate's own CPU per
call barely moves (`python -m bench.ab --b REPOGATE_DB_PGBOUNCER=true`). This measures
the whole of it, directly on PostgreSQL: the latency of an autocommit read
(UserRepository.get) and of an autocommit INSERT, one at a time, flag off and on, in
paired rounds that alternate which goes first; it prints the median of the differences.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from sqlalchemy.engine import make_url

from repositories.database import Database, EngineOptions, create_engine
from repositories.migrate import upgrade
from repositories.users import UserRepository


def _user() -> dict[str, object]:
    name = uuid.uuid4().hex
    return {"email": f"{name}@example.com", "username": name, "display_name": "", "is_active": True}


async def _per_call(db: Database, work: Callable[[Database], Awaitable[object]], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await work(db)
    return (time.perf_counter() - started) / n * 1e6


async def main(pg: str, calls: int, rounds: int) -> None:
    admin = await asyncpg.connect(make_url(pg).set(drivername="postgresql").render_as_string(False))
    name = f"repogate_flag_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(pg).set(database=name).render_as_string(hide_password=False)
    dbs = {
        flag: Database(
            create_engine(url, EngineOptions(pool_size=1, max_overflow=0, pgbouncer=flag))
        )
        for flag in (False, True)
    }
    try:
        await upgrade(dbs[False].engine)
        async with dbs[False].unit_of_work("bench", one_write=True) as uow:
            row = await uow.repository(UserRepository).create(_user())
            await uow.commit()

        async def read(db: Database) -> None:
            async with db.unit_of_work("bench", read_only=True) as uow:
                await uow.repository(UserRepository).get(row["id"])

        async def insert(db: Database) -> None:
            async with db.unit_of_work("bench", one_write=True) as uow:
                await uow.repository(UserRepository).create(_user())
                await uow.commit()

        for label, work in (("read", read), ("insert", insert)):
            for db in dbs.values():
                await _per_call(db, work, calls // 10)  # warm up
            off, on = [], []
            for r in range(rounds):
                for flag in (False, True) if r % 2 == 0 else (True, False):
                    (on if flag else off).append(await _per_call(dbs[flag], work, calls))
            diffs = sorted(b - a for a, b in zip(off, on, strict=True))
            print(
                f"{label}: off {statistics.median(off):.0f} µs, on {statistics.median(on):.0f} µs"
                f" per call; on - off per round {', '.join(f'{d:+.0f}' for d in diffs)};"
                f" median {statistics.median(diffs):+.0f} µs"
            )
    finally:
        for db in dbs.values():
            await db.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--calls", type=int, default=1000, help="per side per round")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.pg, args.calls, args.rounds))
