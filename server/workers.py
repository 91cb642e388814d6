"""Several server processes on one port (SO_REUSEPORT), under one supervisor.

The supervisor migrates once, then starts each worker as a fresh `repogate serve`
process: exec, not fork, so no event loop, pool or gRPC state is copied into it.
It passes on what every worker must agree on (the page-token secret, the shared
port) and what each must have of its own: a private metrics port, which the
supervisor scrapes to serve one endpoint for all (worker_metrics.py), and the
address its peers forward calls of its transactions to (a Unix socket in a
directory only this user can open, or port + i of the advertise address).
SIGTERM or SIGINT is passed to every worker, which drains as a single server
does. A worker that dies on its own is started again; one that cannot even start
stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time

from server.settings import Settings
from server.worker_metrics import WorkerMetrics

log = logging.getLogger("repogate.workers")

# A worker that exits sooner than this after starting could not start: give up.
START_WINDOW = 5.0
RESTART_DELAY = 1.0


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stop = asyncio.Event()
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._failed = False
        self._metrics = (
            WorkerMetrics(settings.metrics_listen, settings.workers)
            if settings.metrics_listen
            else None
        )
        self._runtime = ""

    async def run(self) -> int:
        self._runtime = tempfile.mkdtemp(prefix="repogate-")  # workers' sockets; mode 0700
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        if self._metrics is not None:
            await self._metrics.start()
        try:
            return await self._supervise()
        finally:
            if self._metrics is not None:
                await self._metrics.stop()
            shutil.rmtree(self._runtime, ignore_errors=True)

    def _reload(self) -> None:
        """SIGHUP: each worker loads its keys and certificates again."""
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGHUP)

    async def _supervise(self) -> int:
        keepers = [asyncio.create_task(self._keep(i)) for i in range(self._settings.workers)]
        log.info("supervising %d workers on %s", len(keepers), self._settings.listen)
        await self._stop.wait()
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        _, pending = await asyncio.wait(keepers, timeout=self._settings.shutdown_grace + 10)
        for proc in self._procs.values():
            if proc.returncode is None:
                log.warning("worker %d outlived the grace period; killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await asyncio.gather(*pending, return_exceptions=True)
        # A worker still starting when told to stop dies of SIGTERM before it could catch
        # it: it never served a call, and stopped as asked.
        stopped = (0, -signal.SIGTERM)
        codes = [proc.returncode for proc in self._procs.values()]
        return 1 if self._failed or any(code not in stopped for code in codes) else 0

    async def _keep(self, index: int) -> None:
        """Runs worker `index` until stopping, starting it again when it dies."""
        while not self._stop.is_set():
            started = time.monotonic()
            proc = self._procs[index] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server.cli", "serve", "--no-migrate", env=self._env(index)
            )
            if self._stop.is_set():  # told to stop while this one was being started
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            code = await proc.wait()
            if self._stop.is_set():
                return
            if time.monotonic() - started < START_WINDOW:
                log.error("worker %d could not start (exit %s); stopping", index, code)
                self._failed = True
                self._stop.set()
                return
            log.warning("worker %d exited with %s; starting it again", index, code)
            await asyncio.sleep(RESTART_DELAY)

    def _env(self, index: int) -> dict[str, str]:
        s = self._settings
        given = {
            "REPOGATE_WORKERS": "1",
            "REPOGATE_REUSE_PORT": "true",
            "REPOGATE_LISTEN": s.listen,
            # Page tokens must verify on whichever worker the next page lands on.
            "REPOGATE_PAGE_TOKEN_SECRET": s.page_token_secret,
        }
        # Without the variables given here in another case, or as a *_FILE: a setting
        # given twice is an error.
        replaced = {*given, "REPOGATE_PAGE_TOKEN_SECRET_FILE"}
        env = {k: v for k, v in os.environ.items() if k.upper() not in replaced} | given
        if self._metrics is not None:
            env["REPOGATE_METRICS_LISTEN"] = self._metrics.worker_listen(index)
        return env | self._peer_env(index)

    def _peer_env(self, index: int) -> dict[str, str]:
        """Where worker `index` listens for its peers' forwarded calls, and says it does."""
        s = self._settings
        if s.advertise_address is None:
            private = f"unix:{self._runtime}/worker-{index}.sock"
            return {"REPOGATE_PEER_LISTEN": private, "REPOGATE_ADVERTISE_ADDRESS": private}
        host, port = s.advertise_address.rsplit(":", 1)
        listen_host = s.listen.rsplit(":", 1)[0]
        own = int(port) + index
        return {
            "REPOGATE_PEER_LISTEN": f"{listen_host}:{own}",
            "REPOGATE_ADVERTISE_ADDRESS": f"{host}:{own}",
        }
