"""DianaBot's query profiler and index recommendations (seed 004) on the DianaBot pack, end
to end on SQLite and PostgreSQL: AdminService.GetQueryProfile shows the pack's statements,
RecommendIndexes finds the seed's queries served by the indexes the pack declares and
recommends one for a query the pack declares none for, with the `indexes` entry that would
declare it; its `optimize_system(auto_create_indexes=True)` is an operator running the
statement given, after which the query is served by it."""

from __future__ import annotations

import uuid

from repogate.v1 import admin_pb2 as pb
from repogate.v1 import admin_pb2_grpc
from tests.declared import Client
from tests.e2e.grouping import agg
from tests.e2e.packs.diana import EXTENSIONS, PACK, PACKAGE, add_points, bot_user
from tests.e2e.packs.support import transact
from tests.e2e.support import StartRepogate
from tests.e2e.test_index_advice import run

NEEDS_INDEX, SERVED = pb.SHAPE_VERDICT_NEEDS_INDEX, pb.SHAPE_VERDICT_SERVED
INDEX_UNUSED = pb.SHAPE_VERDICT_INDEX_UNUSED
# Served by an index: the planner may still read a small table sequentially.
INDEXED = (SERVED, INDEX_UNUSED)
BY_CREATION = "create_time, id"


async def test_profile_and_index_advice_for_the_packs_queries(
    fresh_url: str, start_repogate: StartRepogate
) -> None:
    app = await start_repogate(
        database_url=fresh_url, schema_path=str(PACK), extensions=EXTENSIONS, purge_interval=0
    )
    admin = admin_pb2_grpc.AdminServiceStub(app.channel)
    c = Client(app.channel, schema=PACK, package=PACKAGE)
    secret = f"zq-{uuid.uuid4().hex[:10]}"
    players = [await bot_user(c, 10 * i, first_name=f"n{i % 3}") for i in range(6)]
    await transact(c, *add_points(c, players[0].id, 5, secret))
    # The seed's queries, which the pack's indexes serve: get_top_by_points, get_admins.
    await c("UserService/ListUsers", order_by="points desc", page_size=10)
    await c("UserService/ListUsers", filter='role = "admin"')
    # Queries it declares no index for: users by first name, points of one source.
    for _ in range(3):
        await c("UserService/ListUsers", filter=f'first_name = "{secret}"')
    await c("UserService/CountUsers", filter=f'first_name = "{secret}"')
    await c(
        "PointTransactionService/AggregatePointTransactions",
        filter=f'source = "{secret}"',
        group_by=["user_id"],
        aggregations=[agg("sum", "amount")],
    )

    profile = await admin.GetQueryProfile(pb.GetQueryProfileRequest(max_statements=500))
    advice = await admin.RecommendIndexes(pb.RecommendIndexesRequest())

    for hidden in (secret, c.tenant):
        assert hidden not in str(profile)
        assert hidden not in str(advice)
    # The three Lists by first name: one statement, its value a placeholder.
    by_first_name = [s for s in profile.statements if "diana_users.first_name = " in s.sql]
    assert sorted(s.calls for s in by_first_name) == [1, 3]  # the Count, the Lists
    shapes = {(s.method, s.filter, s.order_by): s for s in advice.shapes}
    assert shapes["List", "", "points desc, id"].verdict in INDEXED
    assert shapes["List", "role = ?", BY_CREATION].verdict in INDEXED
    by_name = shapes["List", "first_name = ?", BY_CREATION]
    assert (by_name.resource, by_name.table, by_name.calls) == (
        "dianabot.v1.User",
        "diana_users",
        3,
    )
    assert by_name.verdict == shapes["Count", "first_name = ?", ""].verdict == NEEDS_INDEX
    by_source = shapes["Aggregate", "source = ?", ""]
    assert (by_source.table, by_source.verdict) == ("diana_point_transactions", NEEDS_INDEX)
    wanted = {r.table: r for r in advice.recommendations}
    users, ledger = wanted["diana_users"], wanted["diana_point_transactions"]
    assert list(users.columns) == ["tenant_id", "first_name", "create_time", "id"]
    assert users.name == "ix_diana_users_tenant_first_name_create_time_id"
    assert users.create_index.startswith("CREATE INDEX")
    assert users.schema_option == 'indexes: { fields: ["first_name", "create_time", "id"] }'
    assert list(ledger.columns) == ["tenant_id", "source"]
    assert ledger.schema_option == 'indexes: { fields: ["source"] }'

    await run(fresh_url, users.create_index)  # what auto_create_indexes did, by hand

    after = await admin.RecommendIndexes(pb.RecommendIndexesRequest())
    now = {(s.method, s.filter, s.order_by): s for s in after.shapes}
    assert now["List", "first_name = ?", BY_CREATION].verdict in INDEXED
    assert now["List", "first_name = ?", BY_CREATION].index == users.name
    assert [r.table for r in after.recommendations] == ["diana_point_transactions"]
