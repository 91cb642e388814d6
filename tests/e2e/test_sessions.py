"""SessionService through the real server, on SQLite and PostgreSQL: the standard
methods by declaration, status rules, counters kept in SQL, and purging."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from repogate.v1 import session_pb2 as pb
from repogate.v1 import user_pb2
from tests.e2e.domain import Stubs, new_session, new_user, plain, struct
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    value = timestamp_pb2.Timestamp()
    value.FromDatetime(moment)
    return value


async def update(s: Stubs, tenant: str, session: pb.Session, *paths: str) -> pb.Session:
    request = pb.UpdateSessionRequest(session=session, update_mask=mask(*paths) if paths else None)
    return await s.sessions.UpdateSession(request, metadata=md(tenant))


async def get(s: Stubs, tenant: str, id_: str) -> pb.Session:
    return await s.sessions.GetSession(pb.GetSessionRequest(id=id_), metadata=md(tenant))


async def increment(s: Stubs, tenant: str, id_: str, **amounts: object) -> pb.Session:
    request = pb.IncrementSessionMetricsRequest(id=id_, **amounts)  # type: ignore[arg-type]
    return await s.sessions.IncrementSessionMetrics(request, metadata=md(tenant))


# ------------------------------------------------------------ create and read


async def test_create_applies_defaults_and_reads_back(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)

    created = await new_session(
        stubs, tenant, user.id, name="Chat", preferences=struct({"theme": "dark", "n": 3})
    )

    assert created.user_id == user.id
    assert created.name == "Chat"
    assert created.status == pb.SESSION_STATUS_CREATED
    assert plain(created.preferences) == {"theme": "dark", "n": 3.0}
    assert (created.total_messages, created.total_tool_calls) == (0, 0)
    assert (created.input_tokens, created.output_tokens) == (0, 0)
    assert created.total_cost_usd == "0"
    assert created.last_sequence_number == 0
    assert created.last_access_time == created.create_time
    assert not created.HasField("completed_time")
    assert await get(stubs, tenant, created.id) == created


async def test_create_needs_a_user_id(stubs: Stubs, tenant: str) -> None:
    missing = await fails(new_session(stubs, tenant, ""))
    malformed = await fails(new_session(stubs, tenant, "not-a-uuid"))

    assert (missing.code, missing.violations) == (INVALID, {"session.user_id": "is required"})
    assert (malformed.code, malformed.violations) == (
        INVALID,
        {"session.user_id": "must be a UUID"},
    )


async def test_create_checks_every_field(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    request = pb.CreateSessionRequest(
        session=pb.Session(
            user_id=user.id,
            name="x" * 257,
            status=99,  # type: ignore[arg-type]
            preferences=struct({"bad": float("nan")}),
        )
    )

    error = await fails(stubs.sessions.CreateSession(request, metadata=md(tenant)))

    assert error.code == INVALID
    assert set(error.violations) == {
        "session.name",
        "session.status",
        "session.preferences",
    }


@pytest.mark.parametrize("why", ["unknown", "deleted", "other tenant"])
async def test_create_for_a_user_that_is_not_live_fails(
    stubs: Stubs, tenant: str, why: str
) -> None:
    if why == "unknown":
        user_id = str(uuid.uuid4())
    elif why == "deleted":
        user = await new_user(stubs, tenant)
        await stubs.users.DeleteUser(user_pb2.DeleteUserRequest(id=user.id), metadata=md(tenant))
        user_id = user.id
    else:
        user_id = (await new_user(stubs, tenant + "-other")).id

    error = await fails(new_session(stubs, tenant, user_id))

    assert error.code == FAILED_PRECONDITION
    assert error.reason == "USER_NOT_LIVE"
    assert error.metadata["id"] == user_id
    listed = await stubs.sessions.ListSessions(pb.ListSessionsRequest(), metadata=md(tenant))
    assert list(listed.sessions) == []


async def test_another_tenants_session_is_not_found(stubs: Stubs, tenant: str) -> None:
    other = tenant + "-other"
    theirs = await new_session(stubs, other, (await new_user(stubs, other)).id)

    for call in (
        get(stubs, tenant, theirs.id),
        increment(stubs, tenant, theirs.id, total_messages=1),
        stubs.sessions.TouchSession(pb.TouchSessionRequest(id=theirs.id), metadata=md(tenant)),
        update(stubs, tenant, pb.Session(id=theirs.id, name="mine")),
    ):
        error = await fails(call)
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")
    assert await get(stubs, other, theirs.id) == theirs


async def test_list_filters_by_user_and_status(stubs: Stubs, tenant: str) -> None:
    ann, bob = await new_user(stubs, tenant, "ann"), await new_user(stubs, tenant, "bob")
    anns = [await new_session(stubs, tenant, ann.id, name=f"a{i}") for i in range(3)]
    await new_session(stubs, tenant, bob.id, name="b")
    await update(stubs, tenant, pb.Session(id=anns[1].id, status=pb.SESSION_STATUS_ACTIVE))

    by_user = await stubs.sessions.ListSessions(
        pb.ListSessionsRequest(filter=f'user_id = "{ann.id}"', page_size=2), metadata=md(tenant)
    )
    rest = await stubs.sessions.ListSessions(
        pb.ListSessionsRequest(
            filter=f'user_id = "{ann.id}"', page_size=2, page_token=by_user.next_page_token
        ),
        metadata=md(tenant),
    )
    active = await stubs.sessions.ListSessions(
        pb.ListSessionsRequest(filter='status = "active"'), metadata=md(tenant)
    )

    assert [s.name for s in [*by_user.sessions, *rest.sessions]] == ["a0", "a1", "a2"]
    assert rest.next_page_token == ""
    assert [s.id for s in active.sessions] == [anns[1].id]


# ------------------------------------------------------------ update and status


async def test_update_with_mask_and_etag(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    created = await new_session(stubs, tenant, user.id, name="old")

    renamed = await update(
        stubs,
        tenant,
        pb.Session(id=created.id, name="new", etag=created.etag, preferences=struct({"a": 1})),
        "name",
    )
    stale = await fails(
        update(stubs, tenant, pb.Session(id=created.id, name="x", etag=created.etag))
    )

    assert (renamed.name, plain(renamed.preferences)) == ("new", {})
    assert renamed.etag != created.etag
    assert (stale.code, stale.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")


async def test_user_id_cannot_change_after_create(stubs: Stubs, tenant: str) -> None:
    ann, bob = await new_user(stubs, tenant, "ann"), await new_user(stubs, tenant, "bob")
    session = await new_session(stubs, tenant, ann.id)

    named = await fails(update(stubs, tenant, pb.Session(id=session.id, user_id=bob.id), "user_id"))
    # Without a mask an immutable field sent along is ignored, like output-only ones.
    unmasked = await update(stubs, tenant, pb.Session(id=session.id, user_id=bob.id, name="n"))

    assert named.code == INVALID
    assert "update_mask" in named.violations
    assert (unmasked.user_id, unmasked.name) == (ann.id, "n")


async def test_finishing_sets_completed_time_once_and_is_final(stubs: Stubs, tenant: str) -> None:
    session = await new_session(stubs, tenant, (await new_user(stubs, tenant)).id)
    active = await update(stubs, tenant, pb.Session(id=session.id, status=pb.SESSION_STATUS_ACTIVE))
    done = await update(
        stubs, tenant, pb.Session(id=session.id, status=pb.SESSION_STATUS_COMPLETED)
    )
    # Writing the same status again is no transition: allowed, and the time stays.
    again = await update(
        stubs, tenant, pb.Session(id=session.id, status=pb.SESSION_STATUS_COMPLETED, name="x")
    )

    reopened = await fails(
        update(stubs, tenant, pb.Session(id=session.id, status=pb.SESSION_STATUS_ACTIVE))
    )

    assert not active.HasField("completed_time")
    assert done.HasField("completed_time")
    assert again.completed_time == done.completed_time
    assert again.name == "x"
    assert reopened.code == FAILED_PRECONDITION
    assert reopened.reason == "INVALID_STATUS_TRANSITION"
    assert (reopened.metadata["from"], reopened.metadata["to"]) == ("completed", "active")
    assert "from completed to active" in reopened.message
    assert await get(stubs, tenant, session.id) == again


async def test_a_session_created_finished_has_its_completed_time(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    created = await new_session(stubs, tenant, user.id, status=pb.SESSION_STATUS_TERMINATED)

    assert created.status == pb.SESSION_STATUS_TERMINATED
    assert created.completed_time == created.create_time == created.last_access_time


async def test_status_cannot_be_cleared(stubs: Stubs, tenant: str) -> None:
    session = await new_session(stubs, tenant, (await new_user(stubs, tenant)).id)

    error = await fails(update(stubs, tenant, pb.Session(id=session.id), "status"))

    assert error.violations == {"session.status": "must be set"}


# ------------------------------------------------------------ counters


async def test_count_active_sessions_of_a_user(stubs: Stubs, tenant: str) -> None:
    ann, bob = await new_user(stubs, tenant, "ann"), await new_user(stubs, tenant, "bob")
    statuses = [
        pb.SESSION_STATUS_ACTIVE,
        pb.SESSION_STATUS_WAITING,
        pb.SESSION_STATUS_PROCESSING,
        pb.SESSION_STATUS_CREATED,
        pb.SESSION_STATUS_COMPLETED,
        pb.SESSION_STATUS_ACTIVE,
    ]
    created = [await new_session(stubs, tenant, ann.id, status=status) for status in statuses]
    await new_session(stubs, tenant, bob.id, status=pb.SESSION_STATUS_ACTIVE)
    await stubs.sessions.DeleteSession(
        pb.DeleteSessionRequest(id=created[-1].id), metadata=md(tenant)
    )
    live = statuses[:-1]
    expected = sum(
        status
        in (pb.SESSION_STATUS_ACTIVE, pb.SESSION_STATUS_WAITING, pb.SESSION_STATUS_PROCESSING)
        for status in live
    )

    counted = await stubs.sessions.CountActiveSessions(
        pb.CountActiveSessionsRequest(user_id=ann.id), metadata=md(tenant)
    )
    nobody = await stubs.sessions.CountActiveSessions(
        pb.CountActiveSessionsRequest(user_id=str(uuid.uuid4())), metadata=md(tenant)
    )

    assert counted.active_count == expected == 3
    assert nobody.active_count == 0


async def test_increment_adds_to_every_counter(stubs: Stubs, tenant: str) -> None:
    session = await new_session(stubs, tenant, (await new_user(stubs, tenant)).id)

    first = await increment(
        stubs,
        tenant,
        session.id,
        total_messages=2,
        total_tool_calls=1,
        total_cost_usd="0.000000001",
        input_tokens=100,
        output_tokens=40,
    )
    second = await increment(stubs, tenant, session.id, total_messages=1, total_cost_usd="1.5")

    assert (second.total_messages, second.total_tool_calls) == (3, 1)
    assert (second.input_tokens, second.output_tokens) == (100, 40)
    assert second.total_cost_usd == "1.500000001"
    assert first.total_cost_usd == "0.000000001"
    assert second.last_access_time.ToDatetime() >= first.last_access_time.ToDatetime()
    assert second.etag != first.etag
    for filter_, expected in (("total_cost_usd > 1.5", [session.id]), ("total_cost_usd >= 2", [])):
        listed = await stubs.sessions.ListSessions(
            pb.ListSessionsRequest(filter=filter_), metadata=md(tenant)
        )
        assert [s.id for s in listed.sessions] == expected, filter_


async def test_concurrent_increments_lose_nothing(stubs: Stubs, tenant: str) -> None:
    session = await new_session(stubs, tenant, (await new_user(stubs, tenant)).id)
    costs = [f"0.{i:09d}" for i in range(1, 51)]

    await asyncio.gather(
        *(
            increment(
                stubs,
                tenant,
                session.id,
                total_messages=i,
                total_tool_calls=1,
                input_tokens=10 * i,
                output_tokens=3,
                total_cost_usd=cost,
            )
            for i, cost in enumerate(costs, start=1)
        )
    )

    final = await get(stubs, tenant, session.id)
    assert final.total_messages == sum(range(1, 51))
    assert final.total_tool_calls == 50
    assert final.input_tokens == 10 * sum(range(1, 51))
    assert final.output_tokens == 150
    assert Decimal(final.total_cost_usd) == sum(Decimal(cost) for cost in costs)


async def test_an_increment_retried_with_its_request_id_counts_once(
    stubs: Stubs, tenant: str
) -> None:
    session = await new_session(stubs, tenant, (await new_user(stubs, tenant)).id)
    request_id = str(uuid.uuid4())

    first = await increment(stubs, tenant, session.id, total_messages=5, request_id=request_id)
    retry = await increment(stubs, tenant, session.id, total_messages=5, request_id=request_id)

    assert retry == first
    assert (await get(stubs, tenant, session.id)).total_messages == 5


@pytest.mark.parametrize(
    ("amounts", "field"),
    [
        ({"total_messages": -1}, "total_messages"),
        ({"input_tokens": 2**48 + 1}, "input_tokens"),
        ({"total_cost_usd": "-1"}, "total_cost_usd"),
        ({"total_cost_usd": "1e3"}, "total_cost_usd"),
        ({"total_cost_usd": "0.0000000001"}, "total_cost_usd"),
        ({"total_cost_usd": "NaN"}, "total_cost_usd"),
    ],
)
async def test_increments_are_checked(
    stubs: Stubs, tenant: str, amounts: dict[str, object], field: str
) -> None:
    session = await new_session(stubs, tenant, (await new_user(stubs, tenant)).id)

    error = await fails(increment(stubs, tenant, session.id, **amounts))

    assert (error.code, list(error.violations)) == (INVALID, [field])
    assert await get(stubs, tenant, session.id) == session


async def test_touch_moves_last_access_time(stubs: Stubs, tenant: str) -> None:
    session = await new_session(stubs, tenant, (await new_user(stubs, tenant)).id)

    touched = await stubs.sessions.TouchSession(
        pb.TouchSessionRequest(id=session.id), metadata=md(tenant)
    )

    assert touched.last_access_time.ToDatetime() > session.last_access_time.ToDatetime()
    assert touched.update_time.ToDatetime() > session.update_time.ToDatetime()


async def test_counters_of_a_deleted_session_do_not_move(stubs: Stubs, tenant: str) -> None:
    session = await new_session(stubs, tenant, (await new_user(stubs, tenant)).id)
    deleted = await stubs.sessions.DeleteSession(
        pb.DeleteSessionRequest(id=session.id), metadata=md(tenant)
    )

    error = await fails(increment(stubs, tenant, session.id, total_messages=1))

    assert (error.code, error.reason) == (FAILED_PRECONDITION, "RESOURCE_DELETED")
    assert await get(stubs, tenant, session.id) == deleted


# ------------------------------------------------------------ purge


async def test_purge_removes_sessions_finished_or_idle_before_the_cutoff(
    stubs: Stubs, tenant: str
) -> None:
    user = await new_user(stubs, tenant)
    idle = await new_session(stubs, tenant, user.id, name="idle")
    done = await new_session(stubs, tenant, user.id, name="done")
    await update(stubs, tenant, pb.Session(id=done.id, status=pb.SESSION_STATUS_COMPLETED))
    await stubs.sessions.TouchSession(pb.TouchSessionRequest(id=done.id), metadata=md(tenant))
    deleted = await new_session(stubs, tenant, user.id, name="deleted")
    await stubs.sessions.DeleteSession(pb.DeleteSessionRequest(id=deleted.id), metadata=md(tenant))
    # The cutoff is the server's own time of a write: no clock of the test's is compared.
    marker = await new_session(stubs, tenant, user.id, name="marker")
    cutoff = marker.last_access_time
    fresh = await new_session(stubs, tenant, user.id, name="fresh")
    other = tenant + "-other"
    theirs = await new_session(stubs, other, (await new_user(stubs, other)).id)

    purged = await stubs.sessions.PurgeSessions(
        pb.PurgeSessionsRequest(cutoff_time=cutoff), metadata=md(tenant)
    )

    assert purged.purged_count == 3
    left = await stubs.sessions.ListSessions(
        pb.ListSessionsRequest(show_deleted=True), metadata=md(tenant)
    )
    assert [s.name for s in left.sessions] == ["marker", "fresh"]
    assert fresh.id in {s.id for s in left.sessions}
    for gone in (idle, done, deleted):
        assert (await fails(get(stubs, tenant, gone.id))).code == grpc.StatusCode.NOT_FOUND
    assert await get(stubs, other, theirs.id) == theirs


async def test_purge_cutoff_is_required_and_not_in_the_future(stubs: Stubs, tenant: str) -> None:
    missing = await fails(
        stubs.sessions.PurgeSessions(pb.PurgeSessionsRequest(), metadata=md(tenant))
    )
    future = await fails(
        stubs.sessions.PurgeSessions(
            pb.PurgeSessionsRequest(cutoff_time=timestamp(datetime.now(UTC) + timedelta(days=1))),
            metadata=md(tenant),
        )
    )

    assert missing.violations == {"cutoff_time": "is required"}
    assert future.violations == {"cutoff_time": "must not be in the future"}


# ------------------------------------------------------------ batches and undelete


async def test_batch_create_is_atomic_over_user_checks(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    requests = [
        pb.CreateSessionRequest(session=pb.Session(user_id=user.id, name="ok")),
        pb.CreateSessionRequest(session=pb.Session(user_id=str(uuid.uuid4()), name="no")),
    ]

    error = await fails(
        stubs.sessions.BatchCreateSessions(
            pb.BatchCreateSessionsRequest(requests=requests), metadata=md(tenant)
        )
    )
    created = await stubs.sessions.BatchCreateSessions(
        pb.BatchCreateSessionsRequest(requests=requests[:1] * 3), metadata=md(tenant)
    )

    assert error.reason == "USER_NOT_LIVE"
    listed = await stubs.sessions.ListSessions(pb.ListSessionsRequest(), metadata=md(tenant))
    # One INSERT: the three share a create_time, so the list orders them by id.
    assert sorted(s.id for s in listed.sessions) == sorted(s.id for s in created.sessions)
    assert len(created.sessions) == 3


async def test_undelete_needs_a_live_user(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    session = await new_session(stubs, tenant, user.id)
    await stubs.sessions.DeleteSession(pb.DeleteSessionRequest(id=session.id), metadata=md(tenant))
    await stubs.users.DeleteUser(user_pb2.DeleteUserRequest(id=user.id), metadata=md(tenant))

    refused = await fails(
        stubs.sessions.UndeleteSession(
            pb.UndeleteSessionRequest(id=session.id), metadata=md(tenant)
        )
    )
    await stubs.users.UndeleteUser(user_pb2.UndeleteUserRequest(id=user.id), metadata=md(tenant))
    restored = await stubs.sessions.UndeleteSession(
        pb.UndeleteSessionRequest(id=session.id), metadata=md(tenant)
    )

    assert (refused.code, refused.reason) == (FAILED_PRECONDITION, "USER_NOT_LIVE")
    assert not restored.HasField("delete_time")
