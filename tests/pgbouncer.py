"""A PgBouncer of the test's own, in transaction pooling mode, in front of the shared PostgreSQL.

Debian's `pgbouncer` runs on a free loopback port with its own configuration in a temporary
directory (`pool_mode = transaction`, `auth_type = trust`, and a small pool, so concurrent
callers must share server connections), and is stopped by its PID. PgBouncer refuses to run
as root: as root it is started with `--user=postgres`. Without the program the tests that need it
are skipped, loudly, unless REPOGATE_TEST_REQUIRE_PGBOUNCER=1 (CI sets it), which makes them
fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from repositories.database import create_engine
from repositories.migrate import upgrade
from tests.conftest import POSTGRES_URL, _admin_connect

REQUIRE_PGBOUNCER = os.environ.get("REPOGATE_TEST_REQUIRE_PGBOUNCER") == "1"
# Server connections PgBouncer keeps per database: fewer than the concurrent callers.
POOL_SIZE = 3
START_TIMEOUT = 10.0  # a bound on a hung start, not a measurement


def program() -> str:
    """The pgbouncer executable; skips (or fails, when required) without it."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found is None:
        reason = "pgbouncer is not installed (Debian package `pgbouncer`)"
        if REQUIRE_PGBOUNCER:
            pytest.fail(f"{reason} (REPOGATE_TEST_REQUIRE_PGBOUNCER=1)", pytrace=False)
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config(
    directory: Path, port: int, upstream_host: str, upstream_port: int, extra: dict[str, object]
) -> str:
    settings = "".join(f"{key} = {value}\n" for key, value in extra.items())
    return f"""\
[databases]
* = host={upstream_host} port={upstream_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "users.txt"}
pool_mode = transaction
default_pool_size = {POOL_SIZE}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 200
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
{settings}"""


class PgBouncer:
    """A running PgBouncer; `url(database_url)` routes a database URL through it."""

    def __init__(self, directory: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.port = port
        self.process = process

    def url(self, database_url: str) -> str:
        """`database_url` (to the upstream PostgreSQL) with PgBouncer's host and port."""
        return (
            make_url(database_url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "pgbouncer.log").read_text(errors="replace")
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # PgBouncer's immediate shutdown
            try:
                self.process.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@contextlib.contextmanager
def running(upstream_url: str, **settings: object) -> Iterator[PgBouncer]:
    """Starts PgBouncer in front of the PostgreSQL that `upstream_url` names; stops it after.
    `settings` add to (or override) the [pgbouncer] section, e.g. `query_wait_timeout=1`."""
    executable = program()
    upstream = make_url(upstream_url)
    directory = Path(tempfile.mkdtemp(prefix="repogate-pgbouncer-"))
    port = _free_port()
    user = upstream.username or "postgres"
    (directory / "users.txt").write_text(f'"{user}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        _config(directory, port, upstream.host or "127.0.0.1", upstream.port or 5432, settings)
    )
    command = [executable, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # PgBouncer will not run as root; the postgres user must own its files.
        shutil.chown(directory, "postgres")
        for path in directory.iterdir():
            shutil.chown(path, "postgres")
        command.insert(1, "--user=postgres")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    bouncer = PgBouncer(directory, port, process)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _accepts(port):
            if process.poll() is not None or time.monotonic() > deadline:
                out = process.stdout.read().decode(errors="replace") if process.stdout else ""
                pytest.fail(f"pgbouncer did not start:\n{out}\n{bouncer.log()}", pytrace=False)
            time.sleep(0.05)
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def fresh_database(*, migrated: bool = False) -> AsyncIterator[str]:
    """A new PostgreSQL database of the caller's own (dropped after), empty or `migrated`:
    tests here end server connections and hold advisory locks, which must not reach other
    tests."""
    admin = await _admin_connect()
    name = f"repogate_pgb_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        if migrated:
            engine = create_engine(url)
            await upgrade(engine)
            await engine.dispose()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
