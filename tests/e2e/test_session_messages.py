"""A session with its messages in one call: the built-in Session declares `messages` as
related resources (session.proto), served by the same generic code as declared ones."""

from __future__ import annotations

import grpc
import pytest

from repogate.v1 import message_pb2, session_pb2
from tests.e2e.domain import Stubs, append, new_session, new_user, struct
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e


async def listed(s: Stubs, tenant: str, session_id: str) -> list[str]:
    """The session's live messages, as ListMessages pages them."""
    found, token = [], ""
    while True:
        page = await s.messages.ListMessages(
            message_pb2.ListMessagesRequest(
                filter=f'session_id = "{session_id}"', page_token=token, page_size=1000
            ),
            metadata=md(tenant),
        )
        found += [m.id for m in page.messages]
        token = page.next_page_token
        if not token:
            return found


async def get(s: Stubs, tenant: str, id_: str, *expand: str) -> session_pb2.Session:
    return await s.sessions.GetSession(
        session_pb2.GetSessionRequest(id=id_, expand=expand), metadata=md(tenant)
    )


async def append_many(s: Stubs, tenant: str, session_id: str, count: int) -> None:
    requests = [
        message_pb2.AppendMessageRequest(
            message=message_pb2.Message(
                session_id=session_id, message_type="user", content=struct({"n": n})
            )
        )
        for n in range(count)
    ]
    await s.messages.BatchAppendMessages(
        message_pb2.BatchAppendMessagesRequest(requests=requests), metadata=md(tenant)
    )


async def test_a_session_with_its_live_messages_in_order(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    session, other = [await new_session(stubs, tenant, user.id) for _ in range(2)]
    made = [await append(stubs, tenant, session.id, content={"n": n}) for n in range(3)]
    await append(stubs, tenant, other.id)
    await stubs.messages.DeleteMessage(
        message_pb2.DeleteMessageRequest(id=made[1].id), metadata=md(tenant)
    )

    got = await get(stubs, tenant, session.id, "messages")

    assert [m.sequence_number for m in got.messages] == [1, 3]
    assert [m.id for m in got.messages] == await listed(stubs, tenant, session.id)
    assert not got.more_messages
    plain = await get(stubs, tenant, session.id)
    assert not plain.messages
    got.ClearField("messages")
    assert got == plain


async def test_the_first_100_messages_and_a_flag_for_more(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    session = await new_session(stubs, tenant, user.id)
    await append_many(stubs, tenant, session.id, 101)

    got = await get(stubs, tenant, session.id, "messages")

    assert [m.sequence_number for m in got.messages] == list(range(1, 101))
    assert got.more_messages
    assert len(await listed(stubs, tenant, session.id)) == 101


async def test_list_and_batch_get_sessions_with_their_messages(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    sessions = [await new_session(stubs, tenant, user.id) for _ in range(3)]
    for count, session in enumerate(sessions[1:], start=1):
        await append_many(stubs, tenant, session.id, count)

    page = await stubs.sessions.ListSessions(
        session_pb2.ListSessionsRequest(expand=["messages"]), metadata=md(tenant)
    )
    batch = await stubs.sessions.BatchGetSessions(
        session_pb2.BatchGetSessionsRequest(
            ids=[s.id for s in reversed(sessions)], expand=["messages"]
        ),
        metadata=md(tenant),
    )

    for found in [*page.sessions, *batch.sessions]:
        assert [m.id for m in found.messages] == await listed(stubs, tenant, found.id)
    assert sorted(len(s.messages) for s in page.sessions) == [0, 1, 2]
    assert [len(s.messages) for s in batch.sessions] == [2, 1, 0]


async def test_bad_expand_and_other_tenants(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    session = await new_session(stubs, tenant, user.id)
    await append(stubs, tenant, session.id)
    stranger = f"{tenant}-other"

    error = await fails(get(stubs, tenant, session.id, "messages", "user"))
    hidden = await fails(get(stubs, stranger, session.id, "messages"))
    theirs = await stubs.sessions.ListSessions(
        session_pb2.ListSessionsRequest(expand=["messages"]), metadata=md(stranger)
    )

    assert (error.code, error.reason, list(error.violations)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_EXPAND",
        ["expand"],
    )
    assert hidden.code == grpc.StatusCode.NOT_FOUND
    assert not theirs.sessions
