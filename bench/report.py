"""Rows of results, their ratios to baselines and targets, as a table and as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from bench import stats

# How a row is compared with its baseline:
# throughput: rate / baseline rate, higher is better;
# cost: baseline rate / rate (how many times dearer), lower is better;
# latency: p50 / baseline p50, lower is better;
# cpu: server CPU per call / the baseline's, lower is better (steadier than rates or
# latencies when other work shares the machine).
Kind = Literal["throughput", "cost", "latency", "cpu"]


@dataclass
class Row:
    name: str
    generator: str
    unit: str = "req/s"
    rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    server_cpu_us: float | None = None  # server CPU per operation
    generator_cpu_us: float | None = None  # the load generator's CPU per operation
    peak_rss_mb: float | None = None
    machine_busy: float | None = None  # share of all cores busy while it ran, 0-1
    errors: int = 0
    baseline: str = ""
    baseline_cpu_us: float | None = None  # the baseline's server CPU per operation
    ratio: float | None = None
    target: str = ""
    verdict: str = ""
    notes: list[str] = field(default_factory=list)


def judge(row: Row, base: Row | None, kind: Kind, bound: float | None = None) -> None:
    """Sets `row`'s ratio to `base` and, with a bound, its verdict."""
    if base is None:
        return
    row.baseline = base.name
    row.baseline_cpu_us = base.server_cpu_us
    if kind == "throughput":
        row.ratio = stats.ratio(row.rate, base.rate)
    elif kind == "cost":
        row.ratio = stats.ratio(base.rate, row.rate)
    elif kind == "cpu":
        row.ratio = stats.ratio(row.server_cpu_us, base.server_cpu_us)
    else:
        row.ratio = stats.ratio(row.p50_ms, base.p50_ms)
    if bound is None:
        return
    if kind == "throughput":
        row.target = f">= {bound:g}"
        passed = row.ratio is not None and row.ratio >= bound
    else:
        row.target = f"<= {bound:g}"
        passed = row.ratio is not None and row.ratio <= bound
    row.verdict = "pass" if passed else "MISS"


def judge_scaling(row: Row, base: Row, bound: float) -> None:
    """As `judge` on throughput, for a target that holds only where the machine has room
    for `bound` times `base`'s whole load: the generator's, the databases' and the
    server's. A miss where `base` left the machine no such room is not judged."""
    judge(row, base, "throughput", bound)
    busy = base.machine_busy
    if row.verdict == "MISS" and busy and bound * busy > 1:
        row.verdict = "n/a"
        row.notes.append(
            f"not judged: the machine was {busy:.0%} busy with {base.name!r}, so it holds "
            f"at most {1 / busy:.2f}x that load, and the target needs {bound:g}x"
        )


def round_trip_ceiling(lookup: Row, noop: Row, cache: Row, cache_trips: int) -> float | None:
    """The best throughput ratio to `lookup` (a bare RPC doing one database lookup) of a
    server that also made `cache_trips` round trips to the cache and did nothing else,
    each costing what `cache` (a bare RPC doing one) costs over `noop`. Rates of a
    CPU-bound server go as the inverse of its CPU per call."""
    costs = (lookup.server_cpu_us, noop.server_cpu_us, cache.server_cpu_us)
    if any(cost is None for cost in costs):
        return None
    base, bare, one_trip = (float(cost or 0) for cost in costs)
    return base / (base + cache_trips * max(one_trip - bare, 0.0))


def check(row: Row, value: float | None, bound: float, unit: str) -> None:
    """A target on the row's own value (memory), not on a ratio."""
    row.target = f"<= {bound:g} {unit}"
    row.verdict = "pass" if value is not None and value <= bound else "MISS"


COLUMNS = (
    ("scenario", 44, "<"),
    ("generator", 16, "<"),
    ("rate", 14, ">"),
    ("p50 ms", 8, ">"),
    ("p99 ms", 8, ">"),
    ("srv CPU/op", 11, ">"),
    ("gen CPU/op", 11, ">"),
    ("peak RSS", 10, ">"),
    ("err", 4, ">"),
    ("ratio", 6, ">"),
    ("target", 12, "<"),
    ("verdict", 7, "<"),
)
# Verdicts a smoke run leaves as they are: the run's failures.
FAILED = "error"
SMOKE = "smoke"


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:,.2f} ms" if value >= 10_000 else f"{value:,.0f} us"


def cells(row: Row) -> list[str]:
    rate = "-" if row.rate is None else f"{row.rate:,.0f} {row.unit}"
    return [
        row.name,
        row.generator,
        rate,
        _num(row.p50_ms),
        _num(row.p99_ms),
        _us(row.server_cpu_us),
        _us(row.generator_cpu_us),
        "-" if row.peak_rss_mb is None else f"{row.peak_rss_mb:,.0f} MiB",
        str(row.errors),
        _num(row.ratio),
        row.target,
        row.verdict,
    ]


def table(rows: list[Row]) -> str:
    def line(values: list[str]) -> str:
        return "  ".join(
            f"{value:{align}{width}}"
            for value, (_, width, align) in zip(values, COLUMNS, strict=True)
        ).rstrip()

    out = [line([name for name, _, _ in COLUMNS])]
    out.append(line(["-" * width for _, width, _ in COLUMNS]))
    for row in rows:
        out.append(line(cells(row)))
        baseline = [baseline_note(row)] if row.baseline else []
        for note in baseline + row.notes:
            out.append(f"    {note}")
    return "\n".join(out)


def baseline_note(row: Row) -> str:
    """What the row is set against, with the baseline's server CPU per operation and
    how much more (or less) this row spends."""
    note = f"vs {row.baseline}"
    if row.baseline_cpu_us is None:
        return note
    note += f"; its server CPU {_us(row.baseline_cpu_us)}/op"
    if row.server_cpu_us is not None:
        extra = row.server_cpu_us - row.baseline_cpu_us
        note += f", this row's {'+' if extra >= 0 else '-'}{_us(abs(extra))}"
    return note


def smoke(rows: list[Row]) -> None:
    """A smoke run's rows: ratios stay, judged verdicts become `smoke`; failures stay."""
    for row in rows:
        if row.verdict and row.verdict != FAILED:
            row.verdict = SMOKE


def failures(rows: list[Row]) -> list[Row]:
    """Rows whose scenario failed: a wrong answer, a server that died, error replies."""
    return [row for row in rows if row.verdict == FAILED or row.errors > 0]


def write_json(
    path: Path, facts: dict[str, object], rows: list[Row], extra: dict[str, object]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": facts, "rows": [asdict(row) for row in rows], **extra}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
