"""A PostgreSQL server of the test's own: `initdb` in a temporary directory, started on a
free loopback port with the settings the test asks for (shared_preload_libraries, say),
stopped by `pg_ctl` and removed after. For what the shared server must not be changed for.

The binaries are Debian's (/usr/lib/postgresql/<version>/bin). PostgreSQL will not run as
root: as root, they run as the `postgres` user, who owns the directory. Without initdb the
tests that need it are skipped, loudly, unless REPOGATE_TEST_REQUIRE_POSTGRES=1 (CI sets
it), which makes them fail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_POSTGRES

START_TIMEOUT = 30.0  # a bound on a hung start, not a measurement


def binaries() -> Path:
    """The newest installed PostgreSQL's bin directory; skips (or fails) without one."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if not found:
        reason = "initdb is not installed (Debian package postgresql)"
        if REQUIRE_POSTGRES:
            pytest.fail(f"{reason} (REPOGATE_TEST_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(reason)
    return Path(found[-1]).parent


def _version(path: str) -> int:
    return int(Path(path).parent.parent.name.split(".")[0])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def as_owner(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def run(command: list[str]) -> None:
    done = subprocess.run(
        as_owner(command), capture_output=True, text=True, timeout=START_TIMEOUT, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"{command[0]} failed:\n{done.stdout}\n{done.stderr}", pytrace=False)


@contextlib.contextmanager
def running(**settings: str) -> Iterator[str]:
    """A new PostgreSQL cluster with `settings` (postgresql.conf lines), running; yields
    the SQLAlchemy URL of its `postgres` database (user postgres, trust)."""
    bin_dir = binaries()
    directory = Path(tempfile.mkdtemp(prefix="repogate-pg-"))
    data = directory / "data"
    if os.geteuid() == 0:
        postgres = pwd.getpwnam("postgres")
        os.chown(directory, postgres.pw_uid, postgres.pw_gid)
    try:
        run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-N"])
        port = free_port()
        lines = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{directory}'",
            "fsync": "off",
            **settings,
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in lines.items())
        log = directory / "server.log"
        pg_ctl = str(bin_dir / "pg_ctl")
        run([pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "30", "start"])
        try:
            wait_for(port)
            yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
        finally:
            run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"])
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def wait_for(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"PostgreSQL did not accept connections on port {port}", pytrace=False)
        time.sleep(0.05)
