"""The get and list groups of `python -m bench`: GetUser on a cache hit, a miss and with
the entity cache off, against a bare asyncpg lookup and a bare Redis GET; ListUsers'
first page against the same SELECT in a bare RPC, and a page 1,000 pages deep."""

from __future__ import annotations

from collections.abc import Callable

from bench import report, rpc
from bench.report import Row, judge
from bench.run import (
    DEEP_TENANT,
    LIST_REQUEST,
    TENANT,
    Bench,
    alternated,
    alternation,
    by_rate,
)
from bench.scenarios import H2Scenario, Target, run_h2load
from repogate.v1 import user_pb2


def gets(bench: Bench, main: Target, noop: Target, pg: Target) -> None:
    args = bench.args
    get = "repogate.v1.UserService/GetUser"
    is_user = expect_user(bench.ids.hit)
    ceiling = bench.h2(
        H2Scenario(
            "bare no-op RPC (h2load ceiling)", get, bench.get_request(bench.ids.hit), TENANT
        ),
        noop,
        "noop",
    )
    ceiling.notes.append("the most this generator and grpc.aio serve here: the RPC layer's ceiling")
    if ceiling.generator_cpu_us:
        ceiling.notes.append(
            f"h2load itself: {ceiling.generator_cpu_us:.0f} us CPU per request, about "
            f"{1e6 / ceiling.generator_cpu_us:,.0f} req/s per core: far above any server here"
        )
    # The lookup, the miss and the database path alone alternate, `--repeat` times;
    # each is judged by its median run.
    lookup = H2Scenario(
        "bare asyncpg PK lookup RPC", get, bench.get_request(bench.ids.hit), TENANT, is_user
    )
    is_miss = expect_user(bench.ids.miss)
    miss_request = bench.get_request(bench.ids.miss)
    miss_scenario = H2Scenario("GetUser cache miss", get, miss_request, TENANT, is_miss)
    direct_scenario = H2Scenario("GetUser, entity cache off", get, miss_request, TENANT, is_miss)
    uncached = bench.start_repogate(
        "repogate-no-entity-cache", {"REPOGATE_CACHE_ENTITIES": "false"}
    )
    lookups: list[Row] = []
    misses: list[Row] = []
    directs: list[Row] = []
    for _ in range(args.repeat):
        lookups.append(run_h2load(lookup, pg, bench.load)[0])
        misses.append(run_h2load(miss_scenario, main, bench.load)[0])
        directs.append(run_h2load(direct_scenario, uncached, bench.load)[0])
    bench.stop(uncached)
    base = bench.add(by_rate(lookups), "pg_lookup")
    miss = bench.add(by_rate(misses))
    judge(miss, base, "throughput", 0.55)
    miss.notes.append("every call misses: a tombstone no fill may replace is pinned on its key")
    miss.notes.append("Redis GET, PostgreSQL lookup, Redis fill: three round trips to one")
    direct = bench.add(by_rate(directs))
    judge(direct, base, "throughput", 0.75)
    direct.notes.append("the database path alone (REPOGATE_CACHE_ENTITIES=false): one lookup")
    alternated(base, lookups, miss, misses)
    direct.notes.append(alternation(directs))
    rds = bench.start_baseline("redis")
    value = rpc.get_user(main.address, TENANT, bench.ids.hit).SerializeToString()
    set_baseline_value(args.redis_url, bench.ids.hit, value)
    bare = bench.h2(
        H2Scenario("bare Redis GET RPC", get, bench.get_request(bench.ids.hit), TENANT, is_user),
        rds,
        "redis_get",
    )
    bare.notes.append(f"GET of the same user Repogate caches, serialized: {len(value)} bytes")
    hit = bench.h2(
        H2Scenario("GetUser cache hit", get, bench.get_request(bench.ids.hit), TENANT, is_user),
        main,
        "hit",
    )
    judge(hit, bench.found["redis_get"], "throughput", 0.75)
    bench.stop(rds)
    best = report.round_trip_ceiling(bench.found["pg_lookup"], ceiling, bare, 2)
    if best is not None:
        miss.notes.append(
            f"a server making these round trips and nothing else, each at its bare RPC's "
            f"cost, would reach about {best:.2f}"
        )


def lists(bench: Bench, main: Target, pg: Target) -> None:
    """The bare SELECT's RPC, the first page and the deep page alternate, `--repeat`
    times; each is judged by its median run."""
    method = "repogate.v1.UserService/ListUsers"
    deep = user_pb2.ListUsersRequest()
    deep.CopyFrom(LIST_REQUEST)
    deep.page_token = bench.ids.deep_token
    served = rpc.list_users(main.address, DEEP_TENANT, LIST_REQUEST)
    bare_page = H2Scenario(
        "bare asyncpg ListUsers RPC (the same SELECT)",
        method,
        LIST_REQUEST,
        DEEP_TENANT,
        expect_users([user.id for user in served.users]),
    )
    first_page = H2Scenario(
        "ListUsers first page (50, filter, order)",
        method,
        LIST_REQUEST,
        DEEP_TENANT,
        expect_page(50),
    )
    deep_page = H2Scenario(
        f"ListUsers page {bench.args.deep_pages + 1:,} (keyset)",
        method,
        deep,
        DEEP_TENANT,
        expect_page(50),
    )
    bares: list[Row] = []
    firsts: list[Row] = []
    deeps: list[Row] = []
    for _ in range(bench.args.repeat):
        bares.append(run_h2load(bare_page, pg, bench.load)[0])
        firsts.append(run_h2load(first_page, main, bench.load)[0])
        deeps.append(run_h2load(deep_page, main, bench.load)[0])
    base = bench.add(by_rate(bares), "list_bare")
    base.notes.append(
        "asyncpg runs the statement Repogate runs for this request (bench/pgsql.py), "
        "maps 50 rows to users and signs a next_page_token"
    )
    first = bench.add(by_rate(firsts), "list_first")
    judge(first, base, "throughput", 0.7)
    alternated(base, bares, first, firsts)
    row = bench.add(by_rate(deeps))
    row.notes.append(alternation(deeps))
    judge(row, first, "cost", 1.3)
    row.notes.append(
        f"ratio: how many times the first page's cost (its req/s over this one's); "
        f"filter {LIST_REQUEST.filter!r}, order_by {LIST_REQUEST.order_by!r}"
    )


def expect_user(id_: str) -> Callable[[bytes], None]:
    def check(reply: bytes) -> None:
        if user_pb2.User.FromString(reply).id != id_:
            raise RuntimeError(f"GetUser did not answer user {id_}")

    return check


def expect_page(size: int) -> Callable[[bytes], None]:
    def check(reply: bytes) -> None:
        page = user_pb2.ListUsersResponse.FromString(reply)
        if len(page.users) != size or not page.next_page_token:
            raise RuntimeError(f"ListUsers answered {len(page.users)} users, not {size}")

    return check


def expect_users(ids: list[str]) -> Callable[[bytes], None]:
    """A page of exactly these users, in this order, with a next page."""

    def check(reply: bytes) -> None:
        expect_page(len(ids))(reply)
        if [user.id for user in user_pb2.ListUsersResponse.FromString(reply).users] != ids:
            raise RuntimeError("the bare ListUsers answered other users than Repogate did")

    return check


def set_baseline_value(url: str, id_: str, value: bytes) -> None:
    import redis

    from bench.baseline import REDIS_KEY_PREFIX

    client = redis.Redis.from_url(url)
    try:
        client.set(REDIS_KEY_PREFIX + id_, value, ex=3600)
    finally:
        client.close()
