"""The `repogate` console script, run as a real process: migrate, serve, health.

Each test starts the installed entry point with an environment of its own (no
REPOGATE_* variable leaks in from the caller) in its own tmp_path, talks to it
through the generated stubs, and stops it with a signal. Every wait is bounded
and every process is killed in a finally block.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from repogate.v1 import user_pb2, user_pb2_grpc
from repositories.migrate import head_revision
from server.served import LIVENESS, READINESS
from tests.rpc import md

pytestmark = pytest.mark.e2e

REPOGATE = Path(sys.executable).parent / "repogate"
GRACE = 3.0  # REPOGATE_SHUTDOWN_GRACE given to every server
START_TIMEOUT = 20.0  # from spawn to health SERVING
EXIT_TIMEOUT = GRACE + 15.0  # from the signal to the process gone
RUN_TIMEOUT = 60.0  # one-shot commands (migrate, health, failing serve)
RPC_TIMEOUT = 10.0
# Reconnect quickly while the server is still starting (the default backoff starts at 1 s).
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sqlite_url(path: Path) -> str:
    """A plain sqlite:// URL; Settings picks the async driver."""
    return f"sqlite:///{path}"


def cli_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The caller's environment minus REPOGATE_*, plus a fresh SQLite file and `overrides`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("REPOGATE_")}
    env |= {
        "REPOGATE_DATABASE_URL": sqlite_url(tmp_path / "repogate.db"),
        "REPOGATE_LISTEN": f"127.0.0.1:{free_port()}",
        "REPOGATE_SHUTDOWN_GRACE": str(GRACE),
        "REPOGATE_LOG_LEVEL": "INFO",
    }
    env |= {f"REPOGATE_{key.upper()}": value for key, value in overrides.items()}
    return env


def run(args: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Runs `repogate *args` to completion (bounded); raises TimeoutExpired if it hangs."""
    return subprocess.run(
        [str(REPOGATE), *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


async def run_async(args: list[str], env: Mapping[str, str], cwd: Path) -> tuple[int, str, str]:
    """`run` for async tests: returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        str(REPOGATE),
        *args,
        env=dict(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    finally:
        await _kill(proc)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)


@dataclass
class Server:
    proc: asyncio.subprocess.Process
    address: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Sends `sig` and returns the exit code; fails if the process outlives the grace."""
        self.proc.send_signal(sig)
        try:
            return await asyncio.wait_for(self.proc.wait(), EXIT_TIMEOUT)
        except TimeoutError:
            pytest.fail(f"still running {EXIT_TIMEOUT}s after {sig.name}:\n{self.output()}")


@contextlib.asynccontextmanager
async def serving(
    env: Mapping[str, str],
    cwd: Path,
    address: str,
    *args: str,
    credentials: grpc.ChannelCredentials | None = None,
) -> AsyncIterator[Server]:
    """Runs `repogate serve *args` until its health service says SERVING at `address`
    (over TLS with `credentials`)."""
    log = cwd / f"serve-{uuid.uuid4().hex[:8]}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(REPOGATE),
            "serve",
            *args,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, address, log)
    try:
        await wait_serving(server, credentials)
        yield server
    finally:
        await _kill(proc)


async def wait_serving(server: Server, credentials: grpc.ChannelCredentials | None = None) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    last = "no answer yet"
    channel = (
        aio.insecure_channel(server.address, options=CHANNEL_OPTIONS)
        if credentials is None
        else aio.secure_channel(server.address, credentials, options=CHANNEL_OPTIONS)
    )
    async with channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if server.proc.returncode is not None:
                pytest.fail(
                    f"repogate serve exited {server.proc.returncode} before serving:\n"
                    + server.output()
                )
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except aio.AioRpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            else:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            if loop.time() > deadline:
                pytest.fail(
                    f"not SERVING at {server.address} after {START_TIMEOUT}s ({last}):\n"
                    + server.output()
                )
            await asyncio.sleep(0.1)


async def create_and_get(address: str) -> user_pb2.User:
    """One write and one read through the generated stubs, as a tenant of its own."""
    tenant = f"t-{uuid.uuid4().hex[:16]}"
    async with aio.insecure_channel(address) as channel:
        users = user_pb2_grpc.UserServiceStub(channel)
        created = await users.CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(email="cli@example.com", username="cli")),
            metadata=md(tenant),
            timeout=RPC_TIMEOUT,
        )
        got = await users.GetUser(
            user_pb2.GetUserRequest(id=created.id), metadata=md(tenant), timeout=RPC_TIMEOUT
        )
    assert got == created
    assert got.email == "cli@example.com"
    return got


def alembic_version(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]


# --- migrate ------------------------------------------------------------------------------


def test_migrate_creates_the_schema_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    env = cli_env(tmp_path, database_url=sqlite_url(db))

    first = run(["migrate"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert alembic_version(db) == [head_revision()]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "users" in tables

    again = run(["migrate"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert alembic_version(db) == [head_revision()]


DOMAIN_TABLES = ("sessions", "messages", "jobs")


def test_purge_removes_only_what_is_due(tmp_path: Path) -> None:
    db = tmp_path / "purge.db"
    env = cli_env(tmp_path, database_url=sqlite_url(db))
    assert run(["migrate"], env, tmp_path).returncode == 0
    past, future = "2001-01-01 00:00:00.000000", "2999-01-01 00:00:00.000000"
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        for name, purge_time in (("due", past), ("kept", future), ("live", None)):
            conn.execute(
                "INSERT INTO users (tenant_id, id, email, username, display_name, is_active,"
                " version, create_time, update_time, delete_time, purge_time)"
                " VALUES ('acme', ?, ?, ?, '', 1, 1, ?, ?, ?, ?)",
                (
                    uuid.uuid4().hex,
                    f"{name}@example.com",
                    name,
                    past,
                    past,
                    past if purge_time else None,
                    purge_time,
                ),
            )
        for expire_time in (past, future):
            conn.execute(
                "INSERT INTO request_ids (tenant_id, id, method, digest, response,"
                " create_time, expire_time) VALUES ('acme', ?, 'm', 'd', x'', ?, ?)",
                (uuid.uuid4().hex, past, expire_time),
            )

    result = run(["purge"], env, tmp_path)

    assert result.returncode == 0, result.stderr
    purged = dict(item.split("=") for item in result.stdout.split())
    assert purged == {
        "users": "1",
        "request_ids": "1",
        "transaction_outcomes": "0",
    } | dict.fromkeys(DOMAIN_TABLES, "0")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        names = sorted(row[0] for row in conn.execute("SELECT username FROM users"))
        expiries = [row[0] for row in conn.execute("SELECT expire_time FROM request_ids")]
    assert names == ["kept", "live"]
    assert expiries == [future]


# --- serve --------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
async def test_serve_on_tcp_then_stop_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    address = f"127.0.0.1:{free_port()}"
    # REPOGATE_LISTEN names another port: --listen must win.
    env = cli_env(tmp_path)
    async with serving(env, tmp_path, address, "--listen", address) as server:
        await create_and_get(address)
        code = await server.stop(sig)
        assert code == 0, server.output()
    assert "stopped" in server.output()
    assert "Traceback" not in server.output()


async def test_serve_on_a_unix_socket_from_the_environment(tmp_path: Path) -> None:
    sock = tmp_path / "r.sock"
    address = f"unix:{sock}"
    env = cli_env(tmp_path, listen=address)
    async with serving(env, tmp_path, address) as server:
        assert sock.is_socket()
        await create_and_get(address)
        code = await server.stop()
        assert code == 0, server.output()


async def test_no_migrate_serves_but_the_schema_is_missing(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    address = f"127.0.0.1:{free_port()}"
    env = cli_env(tmp_path, database_url=sqlite_url(db), listen=address)
    async with serving(env, tmp_path, address, "--no-migrate") as server:
        async with aio.insecure_channel(address) as channel:
            users = user_pb2_grpc.UserServiceStub(channel)
            with pytest.raises(aio.AioRpcError) as err:
                await users.GetUser(
                    user_pb2.GetUserRequest(id=str(uuid.uuid4())),
                    metadata=md("t-no-migrate"),
                    timeout=RPC_TIMEOUT,
                )
        assert err.value.code() == grpc.StatusCode.INTERNAL, err.value.details()
        code = await server.stop()
        assert code == 0, server.output()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "alembic_version" not in tables


async def test_serve_on_postgresql(tmp_path: Path, postgresql_url: str) -> None:
    # The plain postgresql:// form an operator would write; Settings adds +asyncpg.
    plain = make_url(postgresql_url).set(drivername="postgresql")
    address = f"127.0.0.1:{free_port()}"
    env = cli_env(
        tmp_path, database_url=plain.render_as_string(hide_password=False), listen=address
    )
    async with serving(env, tmp_path, address) as server:
        await create_and_get(address)
        code = await server.stop()
        assert code == 0, server.output()
    assert "(postgresql)" in server.output()


# --- health -------------------------------------------------------------------------------


async def test_health_against_a_running_server_and_a_closed_port(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = cli_env(tmp_path, listen=address)
    async with serving(env, tmp_path, address) as server:
        code, out, err = await run_async(["health", "--listen", address], env, tmp_path)
        assert code == 0, err
        assert out.strip() == "SERVING"

        # Without --listen it asks $REPOGATE_LISTEN.
        code, out, err = await run_async(["health"], env, tmp_path)
        assert code == 0, err
        assert out.strip() == "SERVING"

        code, out, err = await run_async(
            ["health", "--listen", address, "--service", "repogate.v1.UserService"],
            env,
            tmp_path,
        )
        assert code == 0, err

        code = await server.stop()
        assert code == 0, server.output()

    closed = f"127.0.0.1:{free_port()}"
    code, out, err = await run_async(
        ["health", "--listen", closed, "--timeout", "2"], env, tmp_path
    )
    assert code != 0
    assert "UNAVAILABLE" in err
    assert "Traceback" not in err


async def test_liveness_and_readiness_serve_until_sigterm(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = cli_env(tmp_path, listen=address)
    async with (
        serving(env, tmp_path, address) as server,
        aio.insecure_channel(address) as channel,
    ):
        asked = {
            name: await run_async(["health", "--service", name], env, tmp_path)
            for name in (LIVENESS, READINESS)
        }
        stub = health_pb2_grpc.HealthStub(channel)
        watches = {
            name: stub.Watch(health_pb2.HealthCheckRequest(service=name))
            for name in (LIVENESS, READINESS)
        }
        before = {name: (await watch.read()).status for name, watch in watches.items()}
        server.proc.send_signal(signal.SIGTERM)
        after = {name: (await watch.read()).status for name, watch in watches.items()}
        for watch in watches.values():
            watch.cancel()  # an open watch is a call the drain would wait for
        code = await server.stop()

    assert {name: (c, out.strip()) for name, (c, out, _) in asked.items()} == {
        LIVENESS: (0, "SERVING"),
        READINESS: (0, "SERVING"),
    }
    assert before == dict.fromkeys(watches, health_pb2.HealthCheckResponse.SERVING)
    assert after == dict.fromkeys(watches, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert code == 0, server.output()


# --- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "migrate", "health"])
def test_invalid_settings_exit_2_with_a_message(tmp_path: Path, command: str) -> None:
    env = cli_env(tmp_path, db_pool_size="0")
    result = run([command], env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "invalid settings" in result.stderr
    # The variable as typed, the form expected, and no pydantic field name or link.
    assert "REPOGATE_DB_POOL_SIZE: must be greater than or equal to 1" in result.stderr
    assert "db_pool_size" not in result.stderr
    assert "pydantic" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_misspelt_variable_stops_serve_naming_the_setting_meant(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    env["REPOGATE_DATABSE_URL"] = env.pop("REPOGATE_DATABASE_URL")

    result = run(["serve"], env, tmp_path)

    assert result.returncode == 2, result.stderr
    assert "did you mean REPOGATE_DATABASE_URL?" in result.stderr
    assert not (tmp_path / "repogate.db").exists()  # no server started on the default


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (
            {"db_pool_size": "4", "db_max_overflow": "0", "max_transactions": "4"},
            "REPOGATE_MAX_TRANSACTIONS",
        ),
        ({"transaction_idle_timeout": "700"}, "REPOGATE_TRANSACTION_IDLE_TIMEOUT"),
        (
            {"db_pool_size": "4", "db_max_overflow": "2", "tenant_max_concurrency": "7"},
            "REPOGATE_TENANT_MAX_CONCURRENCY",
        ),
        ({"tenant_queue_timeout": "-1"}, "REPOGATE_TENANT_QUEUE_TIMEOUT:"),
        ({"db_probe_timeout": "0"}, "REPOGATE_DB_PROBE_TIMEOUT:"),
        ({"retry_max_attempts": "0"}, "REPOGATE_RETRY_MAX_ATTEMPTS:"),
        ({"redis_url": "localhost:6379"}, "REPOGATE_REDIS_URL:"),
    ],
)
def test_settings_that_cannot_work_exit_2(
    tmp_path: Path, settings: dict[str, str], named: str
) -> None:
    result = run(["serve"], cli_env(tmp_path, **settings), tmp_path)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_log_level_exits_2(tmp_path: Path) -> None:
    result = run(["serve"], cli_env(tmp_path, log_level="LOUD"), tmp_path)
    assert result.returncode == 2, result.stderr
    assert "REPOGATE_LOG_LEVEL: must be 'DEBUG', 'INFO'" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_exits_non_zero_with_a_message(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run(["serve", "--listen", address], cli_env(tmp_path), tmp_path)
    assert result.returncode != 0
    assert result.returncode != 2  # not a settings error
    assert f"cannot listen on {address}" in result.stderr
    assert "Traceback" not in result.stderr


# --- authentication and the access log ----------------------------------------------------


def test_serve_refuses_the_network_without_authentication(tmp_path: Path) -> None:
    address = f"0.0.0.0:{free_port()}"

    result = run(["serve", "--listen", address], cli_env(tmp_path), tmp_path)

    assert result.returncode == 1, result.stderr
    assert f"refusing to listen on {address} without authentication" in result.stderr
    assert "REPOGATE_ALLOW_UNAUTHENTICATED_NETWORK=true" in result.stderr
    assert "Traceback" not in result.stderr


def access_lines(output: str) -> list[dict[str, object]]:
    """The access lines among the log's JSON lines (tests/e2e/test_logs.py reads them all)."""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "repogate.access"]


async def test_serve_on_the_network_when_told_to_and_log_each_call(tmp_path: Path) -> None:
    port = free_port()
    env = cli_env(tmp_path, listen=f"0.0.0.0:{port}", allow_unauthenticated_network="true")
    async with serving(env, tmp_path, f"127.0.0.1:{port}") as server:
        got = await create_and_get(f"127.0.0.1:{port}")
        code = await server.stop()
        assert code == 0, server.output()

    logged = access_lines(server.output())
    assert [line["method"] for line in logged] == [
        "/repogate.v1.UserService/CreateUser",
        "/repogate.v1.UserService/GetUser",
    ]
    assert {line["code"] for line in logged} == {"OK"}
    assert got.email not in server.output()


async def test_the_access_log_can_be_turned_off(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = cli_env(tmp_path, listen=address, access_log="false")
    async with serving(env, tmp_path, address) as server:
        await create_and_get(address)
        code = await server.stop()
        assert code == 0, server.output()

    assert access_lines(server.output()) == []
    assert "repogate listening on" in server.output()


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"auth_mode": "basic"}, "REPOGATE_AUTH_MODE: must be none, keys"),
        ({"auth_mode": "keys"}, "REPOGATE_API_KEYS_FILE"),
        (
            {"auth_mode": "jwt", "jwt_secret": "too-short"},
            "REPOGATE_JWT_SECRET: must be at least 32",
        ),
        ({"tls_cert_file": "/nonexistent/server.crt"}, "REPOGATE_TLS_CERT_FILE: must be the path"),
    ],
)
def test_auth_and_tls_settings_that_cannot_work_exit_2(
    tmp_path: Path, settings: dict[str, str], named: str
) -> None:
    result = run(["serve"], cli_env(tmp_path, **settings), tmp_path)

    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "too-short" not in result.stderr
    assert "Traceback" not in result.stderr
