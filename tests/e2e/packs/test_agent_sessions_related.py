"""The agent-sessions pack (seed 003): a session with its messages in one call, as the
seed's `selectinload(SessionModel.messages)` loaded them, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.conftest import Running
from tests.declared import Client, ids
from tests.e2e.packs.agents import PACK, PACKAGE, session
from tests.e2e.packs.support import create, listed

pytestmark = pytest.mark.e2e


@pytest.fixture
def c(pack_server: Running) -> Client:
    return Client(pack_server.channel, schema=PACK, package=PACKAGE)


async def test_a_session_with_its_messages_in_one_call(c: Client) -> None:
    made, other = await session(c), await session(c)
    sent = [await create(c, "Message", session_id=made.id, message_type="user") for _ in range(3)]
    await create(c, "Message", session_id=other.id, message_type="user")
    await c("MessageService/DeleteMessage", id=sent[1].id)

    got = await c("SessionService/GetSession", id=made.id, expand=["messages"])
    page = await c("SessionService/ListSessions", expand=["messages"])
    batch = await c("SessionService/BatchGetSessions", ids=[other.id, made.id], expand=["messages"])

    in_order = ids(await listed(c, "Message", filter=f'session_id = "{made.id}"'))
    assert ids(got.messages) == in_order == [sent[0].id, sent[2].id]
    assert [m.sequence_number for m in got.messages] == [1, 3]
    assert not got.more_messages
    by_id = {s.id: ids(s.messages) for s in page.sessions}
    assert by_id[made.id] == in_order
    assert len(by_id[other.id]) == 1
    assert [ids(s.messages) for s in batch.sessions] == [by_id[other.id], in_order]
    assert not (await c("SessionService/GetSession", id=made.id)).messages
