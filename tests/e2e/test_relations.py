"""Users, sessions and messages together: what deleting one does to the others."""

from __future__ import annotations

import grpc
import pytest

from repogate.v1 import message_pb2, session_pb2, user_pb2
from tests.e2e.domain import Stubs, append, new_session, new_user
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

NOT_FOUND = grpc.StatusCode.NOT_FOUND


async def delete_user(s: Stubs, tenant: str, id_: str, *, force: bool = False) -> user_pb2.User:
    return await s.users.DeleteUser(
        user_pb2.DeleteUserRequest(id=id_, force=force), metadata=md(tenant)
    )


async def delete_session(s: Stubs, tenant: str, id_: str, *, force: bool = False) -> None:
    await s.sessions.DeleteSession(
        session_pb2.DeleteSessionRequest(id=id_, force=force), metadata=md(tenant)
    )


async def test_a_user_with_live_sessions_cannot_be_purged(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    live = await new_session(stubs, tenant, user.id)
    await append(stubs, tenant, live.id)

    refused = await fails(delete_user(stubs, tenant, user.id, force=True))

    assert (refused.code, refused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "USER_HAS_SESSIONS",
    )
    assert (refused.metadata["id"], refused.metadata["sessions"]) == (user.id, "1")
    got = await stubs.users.GetUser(user_pb2.GetUserRequest(id=user.id), metadata=md(tenant))
    assert not got.HasField("delete_time")


async def test_a_user_is_purged_with_its_deleted_sessions_and_their_messages(
    stubs: Stubs, tenant: str
) -> None:
    user = await new_user(stubs, tenant)
    sessions = [await new_session(stubs, tenant, user.id) for _ in range(2)]
    messages = [await append(stubs, tenant, session.id) for session in sessions]
    for session in sessions:
        await delete_session(stubs, tenant, session.id)
    other = await new_user(stubs, tenant, "other")
    kept = await new_session(stubs, tenant, other.id)

    purged = await delete_user(stubs, tenant, user.id, force=True)

    assert purged.id == user.id
    for session in sessions:
        error = await fails(
            stubs.sessions.GetSession(
                session_pb2.GetSessionRequest(id=session.id), metadata=md(tenant)
            )
        )
        assert error.code == NOT_FOUND
    for message in messages:
        error = await fails(
            stubs.messages.GetMessage(
                message_pb2.GetMessageRequest(id=message.id), metadata=md(tenant)
            )
        )
        assert error.code == NOT_FOUND
    assert (
        await stubs.sessions.GetSession(
            session_pb2.GetSessionRequest(id=kept.id), metadata=md(tenant)
        )
    ) == kept


async def test_a_batch_purge_refusing_one_user_purges_none(stubs: Stubs, tenant: str) -> None:
    free = await new_user(stubs, tenant, "free")
    busy = await new_user(stubs, tenant, "busy")
    await new_session(stubs, tenant, busy.id)

    error = await fails(
        stubs.users.BatchDeleteUsers(
            user_pb2.BatchDeleteUsersRequest(
                requests=[
                    user_pb2.DeleteUserRequest(id=free.id, force=True),
                    user_pb2.DeleteUserRequest(id=busy.id, force=True),
                ]
            ),
            metadata=md(tenant),
        )
    )

    assert (error.reason, error.metadata["id"]) == ("USER_HAS_SESSIONS", busy.id)
    got = await stubs.users.GetUser(user_pb2.GetUserRequest(id=free.id), metadata=md(tenant))
    assert got == free


async def test_soft_deleting_a_user_keeps_its_sessions_but_blocks_new_ones(
    stubs: Stubs, tenant: str
) -> None:
    user = await new_user(stubs, tenant)
    session = await new_session(stubs, tenant, user.id)

    await delete_user(stubs, tenant, user.id)
    refused = await fails(new_session(stubs, tenant, user.id))
    still = await append(stubs, tenant, session.id)

    assert refused.reason == "USER_NOT_LIVE"
    assert still.sequence_number == 1
    await stubs.users.UndeleteUser(user_pb2.UndeleteUserRequest(id=user.id), metadata=md(tenant))
    assert (await new_session(stubs, tenant, user.id)).user_id == user.id
