"""AdminService.GetQueryProfile through a real server: the statements that took the most
time, with counts and placeholders, from Repogate's own statistics (SQLite; PostgreSQL
without pg_stat_statements) or from pg_stat_statements, on a PostgreSQL of the test's own
that preloads it. And both profiling RPCs are for admin credentials only."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest
from sqlalchemy.engine import make_url

from repogate.v1 import admin_pb2 as pb
from repogate.v1 import admin_pb2_grpc, user_pb2
from tests import own_postgres
from tests.e2e.support import Dedicated, StartRepogate, create, fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

LISTS, COUNTS = 5, 2


def admin(app: Dedicated) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(app.channel)


async def profile(app: Dedicated, **request: int) -> pb.QueryProfile:
    return await admin(app).GetQueryProfile(pb.GetQueryProfileRequest(**request))


async def workload(app: Dedicated, tenant: str, secret: str) -> None:
    """LISTS Lists and COUNTS Counts of users filtered by a value found nowhere else."""
    await create(app.users, tenant, username=f"u{uuid.uuid4().hex[:8]}")
    text = f'username = "{secret}"'
    for _ in range(LISTS):
        await app.users.ListUsers(user_pb2.ListUsersRequest(filter=text), metadata=md(tenant))
    for _ in range(COUNTS):
        await app.users.CountUsers(user_pb2.CountUsersRequest(filter=text), metadata=md(tenant))


def by_username(statements: list[pb.StatementProfile]) -> dict[str, pb.StatementProfile]:
    """The List and the Count of the workload, each one statement shape."""
    found = [s for s in statements if "FROM users" in s.sql and "users.username =" in s.sql]
    (listed,) = [s for s in found if "LIMIT" in s.sql]
    (counted,) = [s for s in found if "count(" in s.sql.lower()]
    return {"list": listed, "count": counted}


async def sql(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_own_statistics_count_each_statement_without_values(
    database_url: str, backend: str, start_repogate: StartRepogate, tenant: str
) -> None:
    app = await start_repogate(database_url=database_url, purge_interval=0)
    secret = f"zq-{uuid.uuid4().hex[:10]}"
    await workload(app, tenant, secret)

    found = await profile(app)

    assert found.source == pb.PROFILE_SOURCE_REPOGATE
    # The shared PostgreSQL has no pg_stat_statements; SQLite never has.
    expected = "pg_stat_statements is not installed in this database"
    assert found.fallback_reason == (expected if backend == "postgresql" else "")
    assert found.HasField("since")
    statements = list(found.statements)
    assert not any(secret in s.sql or tenant in s.sql for s in statements)
    shapes = by_username(statements)
    assert (shapes["list"].calls, shapes["count"].calls) == (LISTS, COUNTS)
    listed = shapes["list"]
    total = listed.total_time.ToTimedelta()
    assert listed.mean_time.ToTimedelta() <= listed.max_time.ToTimedelta() <= total
    rounding = timedelta(microseconds=10)
    assert listed.mean_time.ToTimedelta() * LISTS == pytest.approx(total, abs=rounding)
    times = [s.total_time.ToTimedelta() for s in statements]
    assert times == sorted(times, reverse=True)

    # Looking for pg_stat_statements is the profile's own work, not the workload's.
    again = list((await profile(app)).statements)
    assert not any("pg_extension" in s.sql for s in again)
    (top,) = (await profile(app, max_statements=1)).statements
    assert top == again[0]


async def test_a_negative_count_is_invalid(start_repogate: StartRepogate) -> None:
    app = await start_repogate(purge_interval=0)

    error = await fails(profile(app, max_statements=-1))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.violations) == ["max_statements"]


# pg_stat_statements, on a PostgreSQL of the test's own (the shared one is not changed)


@pytest.fixture(scope="module")
def preloading() -> Iterator[str]:
    """A PostgreSQL that loads pg_stat_statements, and has it in its `postgres` database."""
    with own_postgres.running(shared_preload_libraries="'pg_stat_statements'") as url:
        yield url


async def test_pg_stat_statements_answers_when_installed(
    preloading: str, start_repogate: StartRepogate, tenant: str
) -> None:
    await sql(preloading, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    app = await start_repogate(database_url=preloading, db_pool_size=2, purge_interval=0)
    secret = f"zq-{uuid.uuid4().hex[:10]}"
    await workload(app, tenant, secret)
    # The same user: a statement with a constant, normalized by the extension; and a
    # utility statement, whose text keeps its literal, so it must not be shown.
    await sql(
        preloading,
        f"SELECT '{secret}'::text AS literal_probe",
        f"COMMENT ON TABLE users IS '{secret}'",
        "CREATE DATABASE elsewhere",
    )
    await sql(
        make_url(preloading).set(database="elsewhere").render_as_string(False),
        "SELECT 1 AS elsewhere_probe",
    )

    found = await profile(app, max_statements=500)

    assert found.source == pb.PROFILE_SOURCE_PG_STAT_STATEMENTS
    assert found.fallback_reason == ""
    assert found.HasField("since")
    statements = list(found.statements)
    assert not any(secret in s.sql or tenant in s.sql for s in statements)
    assert not any("COMMENT ON" in s.sql or "elsewhere_probe" in s.sql for s in statements)
    assert any(s.sql == "SELECT $1::text AS literal_probe" for s in statements)
    shapes = by_username(statements)
    assert (shapes["list"].calls, shapes["count"].calls) == (LISTS, COUNTS)
    assert "$2" in shapes["list"].sql


async def test_pg_stat_statements_not_loaded_falls_back_and_says_why(
    start_repogate: StartRepogate, tenant: str
) -> None:
    with own_postgres.running() as url:
        # Installable without the library loaded; only reading it then fails.
        await sql(url, "CREATE EXTENSION pg_stat_statements")
        app = await start_repogate(database_url=url, db_pool_size=2, purge_interval=0)
        secret = f"zq-{uuid.uuid4().hex[:10]}"
        await workload(app, tenant, secret)

        found = await profile(app)
        await app.channel.close()
        await app.app.stop(0)

    assert found.source == pb.PROFILE_SOURCE_REPOGATE
    assert "shared_preload_libraries" in found.fallback_reason
    assert by_username(list(found.statements))["list"].calls == LISTS


# Admin only

ADMIN_KEY = f"rg_ops_{secrets.token_urlsafe(24)}"
TENANT_KEY = f"rg_own_{secrets.token_urlsafe(24)}"


@pytest.fixture
async def guarded(start_repogate: StartRepogate, tmp_path: Path, tenant: str) -> Dedicated:
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f"""
[keys.own]
sha256 = "{hashlib.sha256(TENANT_KEY.encode()).hexdigest()}"
tenants = ["{tenant}"]

[keys.ops]
sha256 = "{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}"
tenants = []
scopes = ["admin"]
"""
    )
    return await start_repogate(auth_mode="keys", api_keys_file=keys, purge_interval=0)


async def test_profiling_needs_the_admin_scope(guarded: Dedicated) -> None:
    stub = admin(guarded)
    calls = [
        lambda key: stub.GetQueryProfile(pb.GetQueryProfileRequest(), metadata=key),
        lambda key: stub.RecommendIndexes(pb.RecommendIndexesRequest(), metadata=key),
    ]
    for call in calls:
        error = await fails(call((("authorization", f"ApiKey {TENANT_KEY}"),)))
        assert (error.code, error.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "ADMIN_SCOPE_REQUIRED",
        )
        assert await call((("authorization", f"ApiKey {ADMIN_KEY}"),)) is not None
