"""Running one scenario: against which server, driven by what, measured how."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
from google.protobuf.message import Message

from bench import h2load, rpc
from bench.procs import MB, Meter, Server, Usage
from bench.report import Row

# Checks the one answer got before a run; raises when it is not what the scenario needs.
Check = Callable[[bytes], None]


@dataclass(frozen=True)
class Target:
    """A server and how to call it."""

    server: Server
    repogate: bool = False  # whether it is Repogate, whose AdminService counts its calls
    workers: int = 1

    @property
    def address(self) -> str:
        return self.server.address


@dataclass
class Window:
    """What happened on the machine while a scenario ran."""

    usage: Usage
    machine_busy: float  # share of all cores busy, 0-1
    per_process_cpu: list[float] = field(default_factory=list)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Measured:
    """Samples a server's CPU and memory, and the whole machine's CPU, around a run."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._meter = Meter(server)
        self._machine = psutil.cpu_times()
        self._each = self._per_process()

    def _per_process(self) -> dict[int, float]:
        times = {}
        for proc in self._server.tree():
            try:
                cpu = proc.cpu_times()
            except psutil.Error:
                continue
            times[proc.pid] = cpu.user + cpu.system
        return times

    def start(self) -> Measured:
        self._machine = psutil.cpu_times()
        self._each = self._per_process()
        self._meter.start()
        return self

    def stop(self) -> Window:
        usage = self._meter.stop()
        after = psutil.cpu_times()
        total = sum(after) - sum(self._machine)
        idle = (after.idle + after.iowait) - (self._machine.idle + self._machine.iowait)
        each = self._per_process()
        split = [each[pid] - self._each.get(pid, 0.0) for pid in sorted(each)]
        return Window(usage, 1 - idle / total if total else 0.0, split)


def fill(row: Row, window: Window, ops: int, generator_cpu: float | None) -> Row:
    if ops:
        row.server_cpu_us = window.usage.cpu_seconds / ops * 1e6
        if generator_cpu is not None:
            row.generator_cpu_us = generator_cpu / ops * 1e6
    row.peak_rss_mb = window.usage.peak_rss / MB
    row.machine_busy = window.machine_busy
    busy = f"machine busy {window.machine_busy:.0%} of {psutil.cpu_count()} cores"
    if len(window.per_process_cpu) > 1:
        shares = ", ".join(f"{cpu:.1f}" for cpu in window.per_process_cpu)
        busy += f"; CPU seconds per server process (supervisor first): {shares}"
    row.notes.append(busy)
    return row


@dataclass(frozen=True)
class H2Scenario:
    name: str
    method: str  # e.g. "repogate.v1.UserService/GetUser"
    request: Message
    tenant: str
    check: Check | None = None


def run_h2load(
    scenario: H2Scenario, target: Target, load: h2load.Load
) -> tuple[Row, h2load.Result]:
    """Checks the request once, warms up with `load.warmup` requests, then measures."""
    reply = rpc.call(
        target.address, "/" + scenario.method, scenario.request.SerializeToString(), scenario.tenant
    )
    if scenario.check is not None:
        scenario.check(reply)
    url = f"http://{target.address}/{scenario.method}"
    body = h2load.frame(scenario.request)
    headers = [f"x-tenant-id: {scenario.tenant}"]
    h2load.run(url, body, headers, h2load.Load(load.clients, load.streams, requests=load.warmup))
    method = scenario.method.removeprefix("repogate.v1.")
    # With several workers, GetStats answers for whichever one it reaches.
    counted = target.repogate and target.workers == 1
    before = _calls(target.address, method) if counted else None
    measured = Measured(target.server).start()
    generator = children_cpu()
    result = h2load.run(url, body, headers, load)
    generator = children_cpu() - generator
    window = measured.stop()
    row = Row(
        scenario.name,
        f"h2load {load.clients}x{load.streams}",
        rate=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.failed,
    )
    if before is not None:
        after = _calls(target.address, method) if isinstance(before, rpc.Calls) else before
        _compare_counts(row, before, after, result.done)
    return fill(row, window, result.done, generator), result


def _calls(address: str, method: str) -> rpc.Calls | str:
    """Repogate's count of calls so far, or why it could not be had."""
    try:
        return rpc.calls(address, method)
    except rpc.StatsUnavailable as exc:
        return str(exc)


def _compare_counts(row: Row, before: rpc.Calls | str, after: rpc.Calls | str, done: int) -> None:
    """Adds Repogate's server faults to the row's errors; notes a count h2load disagrees with."""
    if isinstance(before, str) or isinstance(after, str):
        row.notes.append(f"cannot count Repogate's calls: GetStats answered {after}")
        return
    row.errors += after.server_errors - before.server_errors
    answered = after.count - before.count
    if abs(answered - done) > max(50, done // 100):
        row.notes.append(f"Repogate counted {answered} calls, h2load {done}")


@dataclass(frozen=True)
class DriverScenario:
    name: str
    kind: str  # bench.driver's KIND
    tenant: str
    concurrency: int
    unit: str = "req/s"
    extra: tuple[str, ...] = ()  # more bench.driver arguments


def run_driver(scenario: DriverScenario, target: Target, seconds: float) -> Row:
    """Runs bench.driver against `target`; the server is measured only while it drives."""
    argv = [sys.executable, "-m", "bench.driver", scenario.kind, "--target", target.address]
    argv += ["--tenant", scenario.tenant, "--seconds", f"{seconds:g}"]
    argv += ["--concurrency", str(scenario.concurrency), *scenario.extra]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise RuntimeError(
                f"bench.driver {scenario.kind} did not start against {target.address}"
            )
        measured = Measured(target.server).start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out = proc.stdout.readline()
        window = measured.stop()
        if proc.wait(timeout=30) != 0 or not out:
            raise RuntimeError(f"bench.driver {scenario.kind} failed")
    data = json.loads(out)
    ops, rows, elapsed = data["ops"], data["rows"], data["seconds"]
    rate = (rows if scenario.unit == "rows/s" else ops) / elapsed
    p50, p99 = data["p50_us"], data["p99_us"]
    row = Row(
        scenario.name,
        f"python c{scenario.concurrency}",
        unit=scenario.unit,
        rate=rate,
        p50_ms=None if p50 is None else p50 / 1000,
        p99_ms=None if p99 is None else p99 / 1000,
        errors=sum(data["errors"].values()),
    )
    if data["errors"]:
        row.notes.append(f"errors: {data['errors']}")
    if scenario.unit != "req/s":
        row.notes.append(f"{ops / elapsed:,.1f} operations/s, {rows} rows in {elapsed:.1f} s")
    return fill(row, window, ops, data["driver_cpu_seconds"])
