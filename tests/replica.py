"""A PostgreSQL primary and a streaming replica of the test's own.

The primary is tests/own_postgres.py's cluster with wal_level=replica; the replica is
`pg_basebackup -R` of it (a standby.signal and primary_conninfo written for it) in a
temporary directory of its own, started on a free loopback port. Both run as the
`postgres` user and are stopped by `pg_ctl` after; neither touches the shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from tests import own_postgres


def plain(url: str) -> str:
    """The asyncpg DSN of a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class Pair:
    """A running primary and its standby; the standby can be stopped and started again."""

    primary_url: str
    replica_url: str
    _pg_ctl: str
    _data: Path
    _log: Path

    def stop_replica(self) -> None:
        """Kills the standby as a crash would (immediate shutdown: no checkpoint)."""
        own_postgres.run([self._pg_ctl, "-D", str(self._data), "-m", "immediate", "-w", "stop"])

    def start_replica(self) -> None:
        own_postgres.run(
            [self._pg_ctl, "-D", str(self._data), "-l", str(self._log), "-w", "-t", "30", "start"]
        )

    def replica_running(self) -> bool:
        return (self._data / "postmaster.pid").exists()

    async def pause_replay(self) -> None:
        """Pauses the standby's replay, and returns once it has paused (a request alone
        may let it apply a few more records first)."""
        await self.on_replica("SELECT pg_wal_replay_pause()")
        deadline = time.monotonic() + own_postgres.START_TIMEOUT
        while await self.on_replica("SELECT pg_get_wal_replay_pause_state()") != "paused":
            if time.monotonic() > deadline:
                raise AssertionError("the standby's replay did not pause")
            await asyncio.sleep(0.01)

    async def resume_replay(self) -> None:
        await self.on_replica("SELECT pg_wal_replay_resume()")

    async def on_replica(self, sql: str) -> object:
        """One value `sql` answers on the standby (pg_wal_replay_pause(), say)."""
        return await _value(self.replica_url, sql)

    async def on_primary(self, sql: str) -> object:
        return await _value(self.primary_url, sql)


async def _value(url: str, sql: str) -> object:
    conn = await asyncpg.connect(plain(url), timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def running_pair() -> Iterator[Pair]:
    """A primary (wal_level=replica) and a hot standby streaming from it, both running."""
    with own_postgres.running(wal_level="replica", max_wal_senders="5") as primary_url:
        primary = make_url(primary_url)
        bin_dir = own_postgres.binaries()
        directory = Path(tempfile.mkdtemp(prefix="repogate-replica-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        data, log = directory / "data", directory / "server.log"
        pg_ctl = str(bin_dir / "pg_ctl")
        try:
            own_postgres.run(
                [
                    str(bin_dir / "pg_basebackup"),
                    *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
                    *("-D", str(data), "-R", "-X", "stream", "-c", "fast"),
                ]
            )
            port = own_postgres.free_port()
            with (data / "postgresql.conf").open("a") as conf:
                # Later lines win over the primary's, copied with its data directory.
                conf.write(f"port = {port}\nunix_socket_directories = '{directory}'\n")
                conf.write("hot_standby = on\n")
            replica_url = primary.set(port=port).render_as_string(hide_password=False)
            pair = Pair(primary_url, replica_url, pg_ctl, data, log)
            pair.start_replica()
            own_postgres.wait_for(port)
            try:
                yield pair
            finally:
                if pair.replica_running():
                    pair.stop_replica()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
