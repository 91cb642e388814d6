"""A resource declared in protobuf against the built-in one it is shaped like (the
`declared` group).

bench/schemas/members declares `Member`, shaped like repogate.v1.User: the same
bounded strings, two unique case-insensitive fields, a bool defaulting to true, the
same default order and indexes. Its table is created from the schema and seeded with
the same rows as `users`. One Repogate serves both UserService and MemberService on
the bench database; GetMember, ListMembers and CreateMember alternate with GetUser,
ListUsers and CreateUser on it, `--repeat` times, at the same concurrency, and each
ratio is the declared method's median rate over the built-in one's.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import asyncpg
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import create_async_engine

from bench import pgsql, seed
from bench.report import Row, judge
from bench.run import DEEP_TENANT, LIST_REQUEST, TENANT, WRITE_TENANT, Bench, alternated, by_rate
from bench.scenarios import DriverScenario, H2Scenario, Target, run_driver, run_h2load
from repogate.v1 import user_pb2

SCHEMA = Path(__file__).resolve().parent / "schemas" / "members"
SERVICE = "benchmark.v1.MemberService"
TABLE = "members"
TARGET = 0.95  # within 5 % of the built-in path


@functools.cache
def messages() -> SimpleNamespace:
    """The schema's message classes, compiled and loaded once per process."""
    from schema.loading import load

    load(SCHEMA)
    pool = descriptor_pool.Default()

    def cls(name: str) -> type[Message]:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"benchmark.v1.{name}"))

    names = ("Member", "CreateMemberRequest", "GetMemberRequest", "ListMembersRequest")
    return SimpleNamespace(**{name: cls(name) for name in (*names, "ListMembersResponse")})


def create_request(name: str) -> Message:
    """CreateMember of a member as bench.driver makes users: the same email and username."""
    m = messages()
    member = m.Member(email=f"{name}@bench.example", username=name)
    return m.CreateMemberRequest(member=member)


def list_request() -> Message:
    """The ListUsers request the `list` group measures, asked of members."""
    return messages().ListMembersRequest(
        page_size=LIST_REQUEST.page_size,
        filter=LIST_REQUEST.filter,
        order_by=LIST_REQUEST.order_by,
    )


async def create_and_seed(dsn: str, plan: seed.SeedPlan) -> float:
    """Creates the members table from the schema and copies the users' rows into it, as
    seed.seed_users wrote them; answers the seconds it took."""
    from schema.declared import declare
    from schema.loading import load

    started = time.perf_counter()
    engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(declare(load(SCHEMA)).metadata.create_all)
    finally:
        await engine.dispose()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"INSERT INTO {TABLE} ({', '.join(pgsql.COLUMNS)}) "
            f"SELECT {', '.join(pgsql.COLUMNS)} FROM users WHERE tenant_id = ANY($1::text[])",
            list(plan.counts()),
        )
        await conn.execute(f"ANALYZE {TABLE}")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def first_ids(dsn: str, tenant: str) -> tuple[str, str]:
    """The first user's id and the first member's: the same seeded row in each table."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = []
        for table in ("users", TABLE):
            ids.append(
                await conn.fetchval(
                    f"SELECT id FROM {table} WHERE tenant_id = $1 ORDER BY create_time LIMIT 1",
                    tenant,
                )
            )
    finally:
        await conn.close()
    return str(ids[0]), str(ids[1])


def scenarios(bench: Bench) -> None:
    args = bench.args
    took = asyncio.run(create_and_seed(bench.dsn, seed.SeedPlan(args.users, args.tenants)))
    print(f"  members: created and copied from users in {took:.1f} s", flush=True)
    user_id, member_id = asyncio.run(first_ids(bench.dsn, TENANT))
    m = messages()
    env = {"REPOGATE_SCHEMA": str(SCHEMA)}
    server = bench.start_repogate("repogate-declared", env)
    try:
        get_user = user_pb2.GetUserRequest(id=user_id)
        get_member = m.GetMemberRequest(id=member_id)
        h2_pair(
            bench,
            server,
            H2Scenario(
                "GetUser cache hit",
                "repogate.v1.UserService/GetUser",
                get_user,
                TENANT,
                answers(user_pb2.User, user_id),
            ),
            H2Scenario(
                "GetMember cache hit",
                f"{SERVICE}/GetMember",
                get_member,
                TENANT,
                answers(m.Member, member_id),
            ),
        )
        h2_pair(
            bench,
            server,
            H2Scenario(
                "ListUsers first page (50, filter, order)",
                "repogate.v1.UserService/ListUsers",
                LIST_REQUEST,
                DEEP_TENANT,
                page_of(user_pb2.ListUsersResponse, "users"),
            ),
            H2Scenario(
                "ListMembers first page (50, filter, order)",
                f"{SERVICE}/ListMembers",
                list_request(),
                DEEP_TENANT,
                page_of(m.ListMembersResponse, "members"),
            ),
        )
        pair(
            bench,
            lambda: run_driver(
                DriverScenario("CreateUser", "create", WRITE_TENANT, 32), server, args.seconds
            ),
            lambda: run_driver(
                DriverScenario("CreateMember", "create-member", WRITE_TENANT, 32),
                server,
                args.seconds,
            ),
        )
    finally:
        bench.stop(server)
    uncached = bench.start_repogate(
        "repogate-declared-no-entity-cache", env | {"REPOGATE_CACHE_ENTITIES": "false"}
    )
    try:
        h2_pair(
            bench,
            uncached,
            H2Scenario(
                "GetUser, entity cache off",
                "repogate.v1.UserService/GetUser",
                get_user,
                TENANT,
                answers(user_pb2.User, user_id),
            ),
            H2Scenario(
                "GetMember, entity cache off",
                f"{SERVICE}/GetMember",
                get_member,
                TENANT,
                answers(m.Member, member_id),
            ),
        )
    finally:
        bench.stop(uncached)


def h2_pair(bench: Bench, target: Target, built_in: H2Scenario, declared: H2Scenario) -> None:
    pair(
        bench,
        lambda: run_h2load(built_in, target, bench.load)[0],
        lambda: run_h2load(declared, target, bench.load)[0],
    )


def pair(bench: Bench, built_in: Callable[[], Row], declared: Callable[[], Row]) -> None:
    """Runs the two `--repeat` times, alternating which goes first, and judges the
    declared method's median run against the built-in one's."""
    bases: list[Row] = []
    rows: list[Row] = []
    for round_ in range(bench.args.repeat):
        runs = [(bases, built_in), (rows, declared)]
        for into, run in runs if round_ % 2 == 0 else reversed(runs):
            into.append(run())
    base = bench.add(by_rate(bases))
    row = bench.add(by_rate(rows))
    judge(row, base, "throughput", TARGET)
    alternated(base, bases, row, rows)
    # Server CPU per call drifts less than rates when other work shares the machine;
    # each round's two runs are next to each other, so their ratio drifts least.
    paired = [
        d.server_cpu_us / b.server_cpu_us
        for d, b in zip(rows, bases, strict=True)
        if d.server_cpu_us and b.server_cpu_us
    ]
    if paired:
        row.notes.append(
            f"server CPU per call over the built-in one's, per round: "
            f"{', '.join(f'{r:.2f}' for r in paired)}; median {statistics.median(paired):.2f}x"
        )


def page_of(response: type[Message], items: str) -> Callable[[bytes], None]:
    def check(reply: bytes) -> None:
        page = response.FromString(reply)
        size = len(getattr(page, items))
        if size != LIST_REQUEST.page_size or not page.next_page_token:
            raise RuntimeError(f"{response.__name__} answered {size} {items}, not a full page")

    return check


def answers(message: type[Message], id_: str) -> Callable[[bytes], None]:
    def check(reply: bytes) -> None:
        if message.FromString(reply).id != id_:
            raise RuntimeError(f"{message.__name__} {id_} was not the answer")

    return check
