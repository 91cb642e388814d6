"""The transaction group of `python -m bench` (Begin + 2 CreateUser + Commit against the
same four statements in bare RPCs) and the forward group (an in-transaction GetUser at
its owner and through a peer that forwards it)."""

from __future__ import annotations

from bench import stats
from bench.report import Row, judge
from bench.run import TENANT, WRITE_TENANT, Bench, alternated, by_rate
from bench.scenarios import DriverScenario, Target, run_driver


def transactions(bench: Bench, main: Target, noop: Target, pg: Target) -> None:
    """Repogate's transaction alternates with the bare one, `--repeat` times; the
    no-op's row is the driver's ceiling, for information."""
    concurrency = max(1, bench.args.pool_size - 2)
    ceiling = bench.drive(
        DriverScenario(
            "bare no-op transaction (python ceiling)", "tx", WRITE_TENANT, concurrency, "tx/s"
        ),
        noop,
        "tx_noop",
    )
    bare = DriverScenario(
        "bare asyncpg Begin + 2 INSERT + Commit", "tx", WRITE_TENANT, concurrency, "tx/s"
    )
    served = DriverScenario(
        "transaction: Begin + 2 CreateUser + Commit", "tx", WRITE_TENANT, concurrency, "tx/s"
    )
    bares: list[Row] = []
    serveds: list[Row] = []
    for _ in range(bench.args.repeat):
        bares.append(run_driver(bare, pg, bench.args.seconds))
        serveds.append(run_driver(served, main, bench.args.seconds))
    base = bench.add(by_rate(bares), "tx_bare")
    base.notes.append(
        "BEGIN on a pooled connection kept by transaction id, each INSERT on it, COMMIT "
        "and the connection back: the same 4 statements, one bare RPC each"
    )
    row = bench.add(by_rate(serveds))
    judge(row, base, "throughput", 0.6)
    alternated(base, bares, row, serveds)
    over_noop = stats.ratio(row.rate, ceiling.rate)
    if over_noop is not None:
        row.notes.append(f"{over_noop:.2f}x the no-op transaction's rate")


def forwarded(bench: Bench, main: Target) -> None:
    """An in-transaction GetUser sent to the transaction's owner, and through a peer
    that forwards it there, alternating `--repeat` times; each judged by its median."""
    peer = bench.start_repogate("repogate-peer", {})
    concurrency = max(1, bench.args.pool_size - 2)  # the owner's REPOGATE_MAX_TRANSACTIONS
    extra = ("--owner", main.address, "--user-id", bench.ids.hit)
    direct = DriverScenario(
        "in-transaction GetUser at its owner", "txget", TENANT, concurrency, extra=extra
    )
    forwarded = DriverScenario(
        "in-transaction GetUser through a peer", "txget", TENANT, concurrency, extra=extra
    )
    directs: list[Row] = []
    forwardeds: list[Row] = []
    for _ in range(bench.args.repeat):
        directs.append(run_driver(direct, main, bench.args.seconds))
        forwardeds.append(run_driver(forwarded, peer, bench.args.seconds))
    bench.stop(peer)
    base = bench.add(by_rate(directs))
    row = bench.add(by_rate(forwardeds))
    judge(row, base, "throughput")
    alternated(base, directs, row, forwardeds)
    latency = stats.ratio(row.p50_ms, base.p50_ms)
    row.notes.append(
        f"ratio: forwarded calls/s over direct ones; p50 {latency or 0:.2f}x. Each of "
        f"{concurrency} loops reads in a read-only transaction of its own, begun on the "
        "owner; srv CPU/op is the peer's alone (the owner serves every call either way)"
    )
