"""What a server holds over time, and what a second worker adds: the soak (steady load,
RSS growth), idle RSS after the load, and two workers against one."""

from __future__ import annotations

import contextlib
import time

import psutil

from bench import h2load, report, stats
from bench.procs import MB
from bench.report import Row
from bench.run import (
    DEEP_TENANT,
    LIST_REQUEST,
    TENANT,
    Bench,
    alternated,
    by_rate,
    workers_supported,
)
from bench.scenarios import H2Scenario, Target, run_h2load
from repogate.v1 import user_pb2

# The most a worker may hold idle, before and after the load.
IDLE_RSS_MIB = 120


def soak(bench: Bench, main: Target) -> None:
    seconds = bench.args.soak
    per_client = bench.args.soak_rps / 2
    get = user_pb2.GetUserRequest(id=bench.ids.miss)
    steady = h2load.Load(2, 1, seconds, rps_per_client=per_client)
    runs = [
        h2load.start(
            f"http://{main.address}/repogate.v1.UserService/GetUser",
            h2load.frame(get),
            [f"x-tenant-id: {TENANT}"],
            steady,
        ),
        h2load.start(
            f"http://{main.address}/repogate.v1.UserService/ListUsers",
            h2load.frame(LIST_REQUEST),
            [f"x-tenant-id: {DEEP_TENANT}"],
            h2load.Load(1, 1, seconds, rps_per_client=max(1.0, per_client / 3)),
        ),
    ]
    samples: list[tuple[float, int]] = []
    started = time.monotonic()
    cpu = main.server.cpu_seconds()
    while any(r.proc.poll() is None for r in runs):
        samples.append((time.monotonic() - started, sum(main.server.rss())))
        time.sleep(1.0)
    cpu = main.server.cpu_seconds() - cpu
    results = [r.wait(timeout=60) for r in runs]
    done = sum(r.done for r in results)
    reference = next((rss for t, rss in samples if t >= seconds * 0.1), samples[0][1])
    final = samples[-1][1]
    row = Row(
        f"soak {seconds:g} s: GetUser miss + ListUsers",
        "h2load steady",
        rate=done / seconds,
        p50_ms=results[0].p50_ms,
        p99_ms=results[0].p99_ms,
        server_cpu_us=cpu / done * 1e6 if done else None,
        peak_rss_mb=max(rss for _, rss in samples) / MB,
        errors=sum(r.failed for r in results),
        ratio=final / reference,
        target="<= 1.1",
        verdict="pass" if final <= reference * 1.1 else "MISS",
    )
    row.notes.append(
        f"ratio: RSS at the end ({final / MB:.0f} MiB) over RSS 10 % in "
        f"({reference / MB:.0f} MiB); growth {stats.growth(reference, final):+.1%}; "
        "latencies are GetUser's"
    )
    bench.extra["soak_rss"] = samples
    bench.add(row)


def idle_row(bench: Bench, name: str, target: Target, at_start: int) -> None:
    idle = max(target.server.rss())
    row = Row(name, "-", peak_rss_mb=idle / MB)
    report.check(row, idle / MB, IDLE_RSS_MIB, "MiB")
    row.notes.append(
        f"idle after start {at_start / MB:.0f} MiB, idle after the load above "
        f"{idle / MB:.0f} MiB (judged)"
    )
    bench.add(row)


def workers(bench: Bench, main: Target) -> None:
    """Two workers against one, alternating, on the cache-hit scenario."""
    if not workers_supported():
        row = Row("2 workers: GetUser cache hit", "-", verdict="n/a")
        row.notes.append("repogate serve has no --workers flag")
        bench.add(row)
        return
    two = bench.start_repogate("repogate-2-workers", {}, workers=2)
    time.sleep(1.0)
    at_start = worker_rss(two)
    hit = bench.get_request(bench.ids.hit)
    get = "repogate.v1.UserService/GetUser"
    ones: list[Row] = []
    twos: list[Row] = []
    for _ in range(bench.args.repeat):
        scenario = H2Scenario("1 worker: GetUser cache hit", get, hit, TENANT)
        ones.append(run_h2load(scenario, main, bench.load)[0])
        scenario = H2Scenario("2 workers: GetUser cache hit", get, hit, TENANT)
        twos.append(run_h2load(scenario, two, bench.load)[0])
    time.sleep(1.0)
    after = worker_rss(two)
    bench.stop(two)
    one = bench.add(by_rate(ones))
    row = bench.add(by_rate(twos))
    report.judge_scaling(row, one, 1.5)
    alternated(one, ones, row, twos)
    idle = Row("Repogate idle RSS per worker (2 workers)", "-", peak_rss_mb=max(after) / MB)
    report.check(idle, max(after) / MB, IDLE_RSS_MIB, "MiB")
    idle.notes.append(
        f"workers after start {', '.join(f'{s / MB:.0f}' for s in at_start)} MiB, "
        f"after the load {', '.join(f'{s / MB:.0f}' for s in after)} MiB (judged)"
    )
    bench.add(idle)


def worker_rss(target: Target) -> list[int]:
    """Resident bytes of each worker: the server's children (its own process supervises)."""
    sizes = []
    for proc in target.server.tree()[1:]:
        with contextlib.suppress(psutil.Error):
            sizes.append(proc.memory_info().rss)
    return sizes
