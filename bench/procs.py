"""Servers as child processes: start, wait for health, measure CPU and memory, stop.

Only processes this benchmark started are ever signalled, each by its own pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

MB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serving(address: str, timeout: float = 1.0) -> bool:
    """Whether the gRPC health service at `address` says SERVING."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class Server:
    """A server process listening on `address`; its stderr goes to `log`."""

    def __init__(
        self, name: str, argv: Sequence[str], address: str, env: dict[str, str], log: Path
    ) -> None:
        self.name = name
        self.address = address
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as err:
            self.proc = subprocess.Popen(list(argv), env=env, stdout=subprocess.DEVNULL, stderr=err)
        self.process = psutil.Process(self.proc.pid)
        self._known: dict[int, psutil.Process] = {self.proc.pid: self.process}

    def wait_serving(self, timeout: float = 60.0, workers: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: see {self.log}")
            if serving(self.address) and len(self.tree()) >= workers + (workers > 1):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not serve on {self.address} within {timeout}s")

    def tree(self) -> list[psutil.Process]:
        """The server and its child processes (workers), remembered so stop() finds them."""
        procs = [self.process]
        with contextlib.suppress(psutil.Error):
            procs += self.process.children(recursive=True)
        for proc in procs:
            self._known.setdefault(proc.pid, proc)
        return procs

    def rss(self) -> list[int]:
        """Resident bytes of each process of the tree."""
        sizes = []
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                sizes.append(proc.memory_info().rss)
        return sizes

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def stop(self, timeout: float = 20.0) -> None:
        self.tree()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid, proc in self._known.items():
            if pid != self.proc.pid:
                with contextlib.suppress(psutil.Error):
                    if proc.is_running():
                        os.kill(pid, signal.SIGKILL)


@dataclass
class Usage:
    cpu_seconds: float
    peak_rss: int  # the whole tree, bytes
    peak_rss_per_process: int


class Meter:
    """Samples a server's memory every `interval` seconds between start() and stop(),
    and its CPU time at both ends."""

    def __init__(self, server: Server, interval: float = 0.1) -> None:
        self._server = server
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._peak = 0
        self._peak_one = 0
        self._cpu = 0.0

    def start(self) -> Meter:
        self._cpu = self._server.cpu_seconds()
        self._thread.start()
        return self

    def stop(self) -> Usage:
        self._stop.set()
        self._thread.join()
        self._record()
        return Usage(self._server.cpu_seconds() - self._cpu, self._peak, self._peak_one)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._record()

    def _record(self) -> None:
        sizes = self._server.rss()
        if sizes:
            self._peak = max(self._peak, sum(sizes))
            self._peak_one = max(self._peak_one, max(sizes))
