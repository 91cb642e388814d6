"""One transaction across entity services: x-transaction-id on calls of UserService,
SessionService, MessageService and JobService, and Transact mixing them."""

from __future__ import annotations

import uuid

import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from repogate.v1 import job_pb2, message_pb2, session_pb2, user_pb2
from repogate.v1 import transaction_pb2 as tx_pb
from tests.e2e.domain import Stubs, append, new_session, new_user
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e


async def begin(s: Stubs, tenant: str) -> str:
    tx = await s.txs.BeginTransaction(tx_pb.BeginTransactionRequest(), metadata=md(tenant))
    return tx.id


def inside(tenant: str, tx: str) -> tuple[tuple[str, str], ...]:
    return md(tenant, x_transaction_id=tx)


async def user_and_session(
    s: Stubs, tenant: str, tx: str
) -> tuple[user_pb2.User, session_pb2.Session]:
    user = await s.users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(email="ann@example.com", username="ann")),
        metadata=inside(tenant, tx),
    )
    session = await s.sessions.CreateSession(
        session_pb2.CreateSessionRequest(session=session_pb2.Session(user_id=user.id)),
        metadata=inside(tenant, tx),
    )
    return user, session


async def exists(s: Stubs, tenant: str, user_id: str, session_id: str) -> tuple[bool, bool]:
    """Whether the user and the session are there for calls outside any transaction."""
    users = await s.users.CountUsers(
        user_pb2.CountUsersRequest(filter=f'id = "{user_id}"'), metadata=md(tenant)
    )
    sessions = await s.sessions.CountSessions(
        session_pb2.CountSessionsRequest(filter=f'id = "{session_id}"'), metadata=md(tenant)
    )
    return users.total_size == 1, sessions.total_size == 1


async def test_rollback_undoes_a_user_and_its_session(stubs: Stubs, tenant: str) -> None:
    tx = await begin(stubs, tenant)
    user, session = await user_and_session(stubs, tenant, tx)
    seen_inside = await stubs.sessions.GetSession(
        session_pb2.GetSessionRequest(id=session.id), metadata=inside(tenant, tx)
    )
    assert seen_inside == session
    assert await exists(stubs, tenant, user.id, session.id) == (False, False)

    await stubs.txs.Rollback(tx_pb.RollbackRequest(transaction_id=tx), metadata=md(tenant))

    assert await exists(stubs, tenant, user.id, session.id) == (False, False)


async def test_commit_keeps_a_user_and_its_session(stubs: Stubs, tenant: str) -> None:
    tx = await begin(stubs, tenant)
    user, session = await user_and_session(stubs, tenant, tx)

    await stubs.txs.Commit(tx_pb.CommitRequest(transaction_id=tx), metadata=md(tenant))

    assert await exists(stubs, tenant, user.id, session.id) == (True, True)
    got = await stubs.sessions.GetSession(
        session_pb2.GetSessionRequest(id=session.id), metadata=md(tenant)
    )
    assert got == session
    assert got.user_id == user.id


async def test_numbers_taken_in_a_rolled_back_transaction_are_free_again(
    stubs: Stubs, tenant: str
) -> None:
    session = await new_session(stubs, tenant, (await new_user(stubs, tenant)).id)
    tx = await begin(stubs, tenant)
    numbers = []
    for _ in range(3):
        message = await stubs.messages.AppendMessage(
            message_pb2.AppendMessageRequest(
                message=message_pb2.Message(session_id=session.id, message_type="user")
            ),
            metadata=inside(tenant, tx),
        )
        numbers.append(message.sequence_number)

    await stubs.txs.Rollback(tx_pb.RollbackRequest(transaction_id=tx), metadata=md(tenant))
    after = await append(stubs, tenant, session.id)

    assert numbers == [1, 2, 3]
    assert after.sequence_number == 1


def call(method: str, request: Message) -> tx_pb.TransactCall:
    packed = any_pb2.Any()
    packed.Pack(request)
    return tx_pb.TransactCall(method=method, request=packed)


async def test_transact_spans_services(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    session = await new_session(stubs, tenant, user.id)
    calls = [
        call(
            "repogate.v1.SessionService/CreateSession",
            session_pb2.CreateSessionRequest(session=session_pb2.Session(user_id=user.id)),
        ),
        call(
            "repogate.v1.MessageService/AppendMessage",
            message_pb2.AppendMessageRequest(
                message=message_pb2.Message(session_id=session.id, message_type="user")
            ),
        ),
        call(
            "repogate.v1.SessionService/IncrementSessionMetrics",
            session_pb2.IncrementSessionMetricsRequest(id=session.id, total_messages=1),
        ),
        call(
            "repogate.v1.JobService/CreateJob",
            job_pb2.CreateJobRequest(job=job_pb2.Job(job_type="t")),
        ),
    ]

    response = await stubs.txs.Transact(tx_pb.TransactRequest(calls=calls), metadata=md(tenant))

    created = session_pb2.Session()
    appended = message_pb2.Message()
    counted = session_pb2.Session()
    job = job_pb2.Job()
    for packed, target in zip(response.responses, (created, appended, counted, job), strict=True):
        assert packed.Unpack(target)
    assert created.user_id == user.id
    assert appended.sequence_number == 1
    assert (counted.total_messages, counted.last_sequence_number) == (1, 1)
    assert job.status == job_pb2.JOB_STATUS_PENDING


async def test_transact_fails_as_a_whole_on_a_domain_refusal(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    calls = [
        call(
            "repogate.v1.JobService/CreateJob",
            job_pb2.CreateJobRequest(job=job_pb2.Job(job_type="t")),
        ),
        call(
            "repogate.v1.SessionService/CreateSession",
            session_pb2.CreateSessionRequest(session=session_pb2.Session(user_id=user.id)),
        ),
        call(
            "repogate.v1.SessionService/CreateSession",
            session_pb2.CreateSessionRequest(
                session=session_pb2.Session(user_id=str(uuid.uuid4()))
            ),
        ),
    ]

    error = await fails(stubs.txs.Transact(tx_pb.TransactRequest(calls=calls), metadata=md(tenant)))

    assert (error.reason, error.metadata["call_index"]) == ("USER_NOT_LIVE", "2")
    jobs = await stubs.jobs.CountJobs(job_pb2.CountJobsRequest(), metadata=md(tenant))
    sessions = await stubs.sessions.CountSessions(
        session_pb2.CountSessionsRequest(), metadata=md(tenant)
    )
    assert (jobs.total_size, sessions.total_size) == (0, 0)
