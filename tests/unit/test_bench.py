"""The benchmark's own arithmetic and parsing (bench/): no servers, no load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import h2load, options, pgsql, profile, report, stats
from bench.seed import SeedPlan
from repogate.v1 import user_pb2

pytestmark = pytest.mark.unit

H2LOAD_OUT = """
finished in 5.00s, 2301.40 req/s, 1.19MB/s
requests: 11507 total, 11507 started, 11507 done, 11500 succeeded, 7 failed, 0 errored, 0 timeout
status codes: 11500 2xx, 0 3xx, 0 4xx, 0 5xx
"""


def test_frame_is_flag_length_message() -> None:
    message = user_pb2.GetUserRequest(id="abc")
    payload = message.SerializeToString()
    assert h2load.frame(message) == b"\x00" + len(payload).to_bytes(4, "big") + payload


def test_h2load_summary_and_log_are_read() -> None:
    log = "1795459806860260\t200\t1000\n1795459806860261\t200\t3000\n1795459806860262\t200\t2000\n"
    result = h2load.parse(H2LOAD_OUT, log)
    assert (result.done, result.succeeded, result.failed) == (11507, 11500, 7)
    assert result.rps == pytest.approx(2301.40)
    assert result.seconds == pytest.approx(5.0)
    assert result.p50_ms == pytest.approx(2.0)
    assert result.p99_ms == pytest.approx(3.0)


def test_h2load_milliseconds_and_unreadable_output() -> None:
    out = H2LOAD_OUT.replace("5.00s", "270.82ms")
    assert h2load.parse(out, "").seconds == pytest.approx(0.27082)
    with pytest.raises(RuntimeError):
        h2load.parse("nothing here", "")


def test_h2load_command_is_bounded() -> None:
    load = h2load.Load(clients=2, streams=3, seconds=4, rps_per_client=10)
    cmd = h2load.command("http://127.0.0.1:1/x", Path("b"), ["x-tenant-id: t"], load, Path("l"))
    assert cmd[-1] == "http://127.0.0.1:1/x"
    assert cmd[cmd.index("-D") + 1] == "4"
    assert "x-tenant-id: t" in cmd
    assert "te: trailers" in cmd
    counted = h2load.command("u", Path("b"), [], h2load.Load(requests=10), Path("l"))
    assert counted[counted.index("-n") + 1] == "10"


def test_percentiles_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert stats.percentile(values, 50) == 50
    assert stats.percentile(values, 99) == 99
    assert stats.percentile([], 50) is None
    assert stats.median([3.0, 1.0, 2.0, 4.0]) == 2.5
    assert stats.ratio(1.0, 0.0) is None


def test_seed_plan_skews_to_the_first_tenant_and_adds_up() -> None:
    counts = SeedPlan(100_000, 10).counts()
    assert sum(counts.values()) == 100_000
    assert counts["bench-t0"] == 55_000
    assert len(counts) == 10
    assert sum(SeedPlan(1_003, 4).counts().values()) == 1_003


def test_judging_ratios_against_bounds() -> None:
    base = report.Row("base", "g", rate=1000.0, p50_ms=2.0)
    fast = report.Row("fast", "g", rate=800.0, p50_ms=2.2)
    report.judge(fast, base, "throughput", 0.75)
    assert (fast.ratio, fast.verdict) == (pytest.approx(0.8), "pass")
    report.judge(fast, base, "latency", 1.05)
    assert (fast.ratio, fast.verdict) == (pytest.approx(1.1), "MISS")
    deep = report.Row("deep", "g", rate=500.0)
    report.judge(deep, base, "cost", 1.3)
    assert (deep.ratio, deep.verdict) == (pytest.approx(2.0), "MISS")
    assert "base" in report.table([base, deep])


def test_the_table_prints_rate_cpu_ratio_target_and_verdict_and_the_baselines_cpu() -> None:
    base = report.Row("bare", "g", rate=1000.0, server_cpu_us=200.0)
    row = report.Row("served", "g", rate=500.0, server_cpu_us=450.0)
    report.judge(row, base, "throughput", 0.75)
    assert row.baseline_cpu_us == 200.0
    names = [name for name, _, _ in report.COLUMNS]
    shown = dict(zip(names, report.cells(row), strict=True))
    assert (shown["rate"], shown["srv CPU/op"]) == ("500 req/s", "450 us")
    assert (shown["ratio"], shown["target"], shown["verdict"]) == ("0.50", ">= 0.75", "MISS")
    header, _, base_line, served_line, note = report.table([base, row]).splitlines()
    assert header.index("srv CPU/op") < header.index("ratio") < header.index("verdict")
    assert served_line.rstrip().endswith("MISS")
    assert "450 us" in served_line
    assert "200 us" in base_line
    assert note.strip() == "vs bare; its server CPU 200 us/op, this row's +250 us"
    cheaper = report.Row("cheaper", "g", rate=1200.0, server_cpu_us=150.0)
    report.judge(cheaper, base, "throughput")
    assert report.baseline_note(cheaper).endswith("this row's -50 us")
    unmeasured = report.Row("unmeasured", "g", rate=1.0)
    report.judge(unmeasured, report.Row("bare", "g", rate=1.0), "throughput")
    assert report.baseline_note(unmeasured) == "vs bare"


def test_a_smoke_run_keeps_ratios_and_failures_and_gives_no_verdict() -> None:
    base = report.Row("bare", "g", rate=1000.0)
    missed = report.Row("missed", "g", rate=100.0)
    report.judge(missed, base, "throughput", 0.75)
    passed = report.Row("passed", "g", rate=900.0)
    report.judge(passed, base, "throughput", 0.75)
    failed = report.Row("list: FAILED", "-", verdict=report.FAILED)
    erring = report.Row("erring", "g", rate=900.0, errors=3)
    rows = [base, missed, passed, failed, erring]
    assert report.failures(rows) == [failed, erring]
    report.smoke(rows)
    assert [row.verdict for row in rows] == ["", "smoke", "smoke", "error", ""]
    assert missed.ratio == pytest.approx(0.1)
    assert report.failures([base, missed, passed]) == []


def test_smoke_options_shrink_the_run_and_explicit_ones_win() -> None:
    full = options.parse_args([])
    assert (full.smoke, full.seconds, full.users, full.repeat) == (False, 5.0, 100_000, 3)
    assert full.groups == set(options.GROUPS)
    smoke = options.parse_args(["--smoke", "--database", "b"])
    assert (smoke.seconds, smoke.users, smoke.repeat, smoke.soak) == (1.0, 2_000, 1, 0.0)
    assert (full.warmup, smoke.warmup) == (500, 100)
    assert smoke.groups == set(options.SMOKE_GROUPS)
    assert smoke.database == "b"
    # The smoke's deep page exists: the deep tenant's active users fill more pages.
    deep = SeedPlan(smoke.users, smoke.tenants).counts()["bench-t0"] * 19 // 20
    assert deep > 50 * (smoke.deep_pages + 1)
    chosen = options.parse_args(["--smoke", "--seconds", "3", "--only", "get"])
    assert (chosen.seconds, chosen.groups, chosen.users) == (3.0, {"get"}, 2_000)


def test_the_bare_list_signs_the_keyset_position_of_the_pages_last_row() -> None:
    import base64
    import hashlib
    import hmac
    import json
    import uuid
    from datetime import UTC, datetime

    row = {"create_time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "id": uuid.UUID(int=7)}
    body, signature = pgsql.page_token(b"key", row).split(".")

    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    assert json.loads(decode(body)) == [row["create_time"].isoformat(), str(row["id"])]
    assert decode(signature) == hmac.new(b"key", decode(body), hashlib.sha256).digest()[:16]
    # The statement is Repogate's list page: tenant, filter, live rows, order, one more row.
    assert "ORDER BY users.create_time DESC, users.id ASC LIMIT $3" in pgsql.LIST_PAGE


def test_scaling_is_judged_only_where_the_machine_has_room() -> None:
    one = report.Row("1 worker", "g", rate=1000.0, machine_busy=0.5)
    two = report.Row("2 workers", "g", rate=1400.0)
    report.judge_scaling(two, one, 1.5)
    assert (two.ratio, two.verdict) == (pytest.approx(1.4), "MISS")

    crowded = report.Row("1 worker", "g", rate=1000.0, machine_busy=0.8)
    two = report.Row("2 workers", "g", rate=1200.0)
    report.judge_scaling(two, crowded, 1.5)
    assert (two.ratio, two.verdict) == (pytest.approx(1.2), "n/a")
    assert "1.25x" in two.notes[-1]

    # A pass stands on any machine.
    two = report.Row("2 workers", "g", rate=1600.0)
    report.judge_scaling(two, crowded, 1.5)
    assert two.verdict == "pass"


def test_the_round_trip_ceiling_adds_each_cache_trip_to_the_lookup() -> None:
    lookup = report.Row("pg", "g", server_cpu_us=400.0)
    noop = report.Row("noop", "g", server_cpu_us=200.0)
    cache = report.Row("redis", "g", server_cpu_us=300.0)
    assert report.round_trip_ceiling(lookup, noop, cache, 2) == pytest.approx(400 / 600)
    assert report.round_trip_ceiling(lookup, noop, cache, 0) == pytest.approx(1.0)
    assert report.round_trip_ceiling(lookup, report.Row("noop", "g"), cache, 2) is None


def test_profile_summary_attributes_leaves_and_packages() -> None:
    raw = (
        'process 1:"repogate";<module> (repogate:6);Runner.run (asyncio/runners.py:118);'
        "get (/x/site-packages/sqlalchemy/engine/base.py:12) 3\n"
        'process 1:"repogate";<module> (repogate:6);Runner.run (asyncio/runners.py:118) 1\n'
    )
    summary = profile.summarise(raw)
    assert summary.samples == 4
    assert summary.self_time[0] == ("get (sqlalchemy/engine/base.py)", 0.75)
    assert ("sqlalchemy", 0.75) in summary.by_package
    assert summary.inclusive == [("get (sqlalchemy/engine/base.py)", 0.75)]


def test_the_declared_groups_member_is_stored_as_users_are() -> None:
    """bench/schemas/members is compared with UserService like for like: the same
    columns, types and bounds, and the same indexes (users' last login aside)."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex

    from repositories.tables import users
    from schema.declared import declare
    from schema.loading import load

    # The path bench/declared.py serves (importing it needs the bench's own packages).
    schema = Path(__file__).parents[2] / "bench" / "schemas" / "members"
    members = declare(load(schema)).tables["benchmark.v1.Member"]

    def columns(table: Any, skip: str = "") -> dict[str, tuple[str, bool]]:
        return {c.name: (str(c.type), c.primary_key) for c in table.columns if c.name != skip}

    def indexes(table: Any) -> set[str]:
        ddl = (CreateIndex(i).compile(dialect=postgresql.dialect()) for i in table.indexes)
        return {str(each).replace(table.name, "T") for each in ddl}

    assert columns(members) == columns(users, skip="last_login_time")
    assert indexes(members) == indexes(users)
