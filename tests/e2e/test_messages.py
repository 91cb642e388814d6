"""MessageService through the real server, on SQLite and PostgreSQL: sequence
numbers under concurrency, a session's messages in order, the latest message,
and search by JSON containment with hostile input."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest

from repogate.v1 import message_pb2 as pb
from repogate.v1 import session_pb2
from tests.e2e.domain import Stubs, append, new_session, new_user, plain, struct
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def a_session(s: Stubs, tenant: str) -> session_pb2.Session:
    """A session of a user of its own."""
    user = await new_user(s, tenant, f"u{uuid.uuid4().hex[:12]}")
    return await new_session(s, tenant, user.id)


async def in_order(
    s: Stubs, tenant: str, session_id: str, page_size: int = 1000
) -> list[pb.Message]:
    """Every message of the session, page by page, in the default order."""
    found: list[pb.Message] = []
    token = ""
    while True:
        page = await s.messages.ListMessages(
            pb.ListMessagesRequest(
                filter=f'session_id = "{session_id}"', page_size=page_size, page_token=token
            ),
            metadata=md(tenant),
        )
        found += page.messages
        token = page.next_page_token
        if not token:
            return found


async def search(
    s: Stubs, tenant: str, query: dict[str, Any], session_id: str = "", **fields: Any
) -> pb.SearchMessagesResponse:
    request = pb.SearchMessagesRequest(content=struct(query), session_id=session_id, **fields)
    return await s.messages.SearchMessages(request, metadata=md(tenant))


# ------------------------------------------------------------ sequence numbers


async def test_appends_are_numbered_in_order(stubs: Stubs, tenant: str) -> None:
    session = await a_session(stubs, tenant)

    first = await append(stubs, tenant, session.id, "user", {"text": "hi"}, role="user")
    second = await append(stubs, tenant, session.id, "assistant", {"text": "hello"})

    assert (first.sequence_number, second.sequence_number) == (1, 2)
    assert (first.session_id, first.message_type, first.role) == (session.id, "user", "user")
    assert plain(first.content) == {"text": "hi"}
    after = await stubs.sessions.GetSession(
        session_pb2.GetSessionRequest(id=session.id), metadata=md(tenant)
    )
    assert after.last_sequence_number == 2
    assert after.last_access_time.ToDatetime() >= session.last_access_time.ToDatetime()


async def test_concurrent_appends_take_every_number_once(stubs: Stubs, tenant: str) -> None:
    session = await a_session(stubs, tenant)

    appended = await asyncio.gather(
        *(append(stubs, tenant, session.id, "user", {"i": i}) for i in range(100))
    )

    assert sorted(m.sequence_number for m in appended) == list(range(1, 101))
    listed = await in_order(stubs, tenant, session.id, page_size=7)
    assert [m.sequence_number for m in listed] == list(range(1, 101))
    assert {m.id for m in listed} == {m.id for m in appended}


async def test_sessions_number_their_messages_apart(stubs: Stubs, tenant: str) -> None:
    one, two = await a_session(stubs, tenant), await a_session(stubs, tenant)
    requests = [
        pb.AppendMessageRequest(message=pb.Message(session_id=sid, message_type="user"))
        for sid in (one.id, two.id, one.id, one.id, two.id)
    ]

    batch = await stubs.messages.BatchAppendMessages(
        pb.BatchAppendMessagesRequest(requests=requests), metadata=md(tenant)
    )
    later = await append(stubs, tenant, two.id)

    assert [m.sequence_number for m in batch.messages] == [1, 1, 2, 3, 2]
    assert later.sequence_number == 3


async def test_a_failed_batch_takes_no_numbers(stubs: Stubs, tenant: str) -> None:
    session = await a_session(stubs, tenant)
    requests = [
        pb.AppendMessageRequest(message=pb.Message(session_id=session.id, message_type="user")),
        pb.AppendMessageRequest(
            message=pb.Message(session_id=str(uuid.uuid4()), message_type="user")
        ),
    ]

    error = await fails(
        stubs.messages.BatchAppendMessages(
            pb.BatchAppendMessagesRequest(requests=requests), metadata=md(tenant)
        )
    )
    next_one = await append(stubs, tenant, session.id)

    assert error.code == NOT_FOUND
    assert error.metadata["resource_type"] == "session"
    assert next_one.sequence_number == 1


@pytest.mark.parametrize("why", ["unknown", "other tenant"])
async def test_append_to_a_session_that_is_not_there(stubs: Stubs, tenant: str, why: str) -> None:
    if why == "unknown":
        session_id = str(uuid.uuid4())
    else:
        session_id = (await a_session(stubs, tenant + "-other")).id

    error = await fails(append(stubs, tenant, session_id))

    assert (error.code, error.metadata["resource_type"]) == (NOT_FOUND, "session")


async def test_append_to_a_deleted_session_is_refused(stubs: Stubs, tenant: str) -> None:
    session = await a_session(stubs, tenant)
    await append(stubs, tenant, session.id)
    await stubs.sessions.DeleteSession(
        session_pb2.DeleteSessionRequest(id=session.id), metadata=md(tenant)
    )

    error = await fails(append(stubs, tenant, session.id))

    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RESOURCE_DELETED")
    assert error.metadata["resource_type"] == "session"


async def test_append_checks_its_fields(stubs: Stubs, tenant: str) -> None:
    session = await a_session(stubs, tenant)
    request = pb.AppendMessageRequest(
        message=pb.Message(
            session_id=session.id,
            message_type="has space",
            role="r" * 65,
            content=struct({"k\x00": 1}),
        )
    )

    error = await fails(stubs.messages.AppendMessage(request, metadata=md(tenant)))
    missing = await fails(
        stubs.messages.AppendMessage(
            pb.AppendMessageRequest(message=pb.Message()), metadata=md(tenant)
        )
    )

    assert set(error.violations) == {"message.message_type", "message.role", "message.content"}
    assert set(missing.violations) == {"message.session_id", "message.message_type"}


async def test_session_id_cannot_change(stubs: Stubs, tenant: str) -> None:
    one, two = await a_session(stubs, tenant), await a_session(stubs, tenant + "x")
    message = await append(stubs, tenant, one.id)

    error = await fails(
        stubs.messages.UpdateMessage(
            pb.UpdateMessageRequest(
                message=pb.Message(id=message.id, session_id=two.id),
                update_mask={"paths": ["session_id"]},
            ),
            metadata=md(tenant),
        )
    )

    assert error.code == INVALID


async def test_update_keeps_the_sequence_number(stubs: Stubs, tenant: str) -> None:
    session = await a_session(stubs, tenant)
    message = await append(stubs, tenant, session.id, "draft", {"text": "v1"})

    updated = await stubs.messages.UpdateMessage(
        pb.UpdateMessageRequest(
            message=pb.Message(id=message.id, etag=message.etag, content=struct({"text": "v2"}))
        ),
        metadata=md(tenant),
    )

    assert plain(updated.content) == {"text": "v2"}
    assert (updated.sequence_number, updated.message_type) == (1, "draft")


# ------------------------------------------------------------ latest


async def test_latest_message_of_a_type(stubs: Stubs, tenant: str) -> None:
    session = await a_session(stubs, tenant)
    kinds = ["user", "result", "assistant", "result", "user"]
    appended = [
        await append(stubs, tenant, session.id, kind, {"n": i}) for i, kind in enumerate(kinds)
    ]
    await stubs.messages.DeleteMessage(
        pb.DeleteMessageRequest(id=appended[-1].id), metadata=md(tenant)
    )

    async def latest(kind: str = "") -> pb.Message:
        return await stubs.messages.GetLatestMessage(
            pb.GetLatestMessageRequest(session_id=session.id, message_type=kind),
            metadata=md(tenant),
        )

    assert (await latest("result")).id == appended[3].id
    assert (await latest("user")).id == appended[0].id  # the later one is deleted
    assert (await latest()).id == appended[3].id
    none = await fails(latest("tool_use"))
    assert (none.code, none.metadata["message_type"]) == (NOT_FOUND, "tool_use")


async def test_latest_of_an_unknown_session_names_the_session(stubs: Stubs, tenant: str) -> None:
    missing = str(uuid.uuid4())

    error = await fails(
        stubs.messages.GetLatestMessage(
            pb.GetLatestMessageRequest(session_id=missing), metadata=md(tenant)
        )
    )

    assert (error.code, error.metadata["resource_type"], error.metadata["id"]) == (
        NOT_FOUND,
        "session",
        missing,
    )


# ------------------------------------------------------------ search


def contains(document: Any, query: Any) -> bool:
    """PostgreSQL's jsonb @>, as documented, for the test to compare against."""
    if isinstance(query, dict):
        return isinstance(document, dict) and all(
            key in document and contains(document[key], value) for key, value in query.items()
        )
    if isinstance(query, list):
        return isinstance(document, list) and all(
            any(contains(item, wanted) for item in document) for wanted in query
        )
    if isinstance(query, bool) or query is None:
        return document is query
    if isinstance(query, str):
        return isinstance(document, str) and document == query
    return isinstance(document, float) and document == query


DOCUMENTS: list[dict[str, Any]] = [
    {"text": "hello", "tags": ["a", "b"], "meta": {"lang": "en", "score": 3}},
    {"text": "hello", "tags": ["b"], "meta": {"lang": "de", "score": 3.5}},
    {"text": "Hello", "tags": [], "meta": {"lang": "en", "flags": [True, None]}},
    {"text": 'it\'s "quoted" 100% _done_', "path": "C:\\dir"},
    {"text": "'); DROP TABLE messages; --", "nested": {"deep": {"deeper": [1, [2, 3]]}}},
    {"text": "ünïcødé ✓ 😀 שלום", "ключ": "значение"},
    {"a.b": "dotted key", "$": "dollar", "[0]": "bracket", 'q"k': "quote in key"},
    {"items": [{"id": 1, "ok": True}, {"id": 2, "ok": False}], "n": None},
    {"text": "hello", "tags": ["a", "b", "c"], "meta": {"lang": "en", "score": 3}},
    {"number": 1, "string": "1", "bool": True, "float": 1.5},
]

QUERIES: list[dict[str, Any]] = [
    {},
    {"text": "hello"},
    {"text": "HELLO"},
    {"tags": ["a"]},
    {"tags": ["b", "a"]},
    {"tags": []},
    {"tags": "a"},
    {"meta": {"lang": "en"}},
    {"meta": {"score": 3}},
    {"meta": {"flags": [None]}},
    {"meta": {"flags": [False]}},
    {"text": 'it\'s "quoted" 100% _done_'},
    {"text": "%"},
    {"text": "_"},
    {"path": "C:\\dir"},
    {"text": "'); DROP TABLE messages; --"},
    {"nested": {"deep": {"deeper": [[3]]}}},
    {"nested": {"deep": {"deeper": [3]}}},
    {"text": "ünïcødé ✓ 😀 שלום"},
    {"ключ": "значение"},
    {"a.b": "dotted key"},
    {"$": "dollar", "[0]": "bracket"},
    {'q"k': "quote in key"},
    {"items": [{"ok": False}]},
    {"items": [{"id": 2, "ok": True}]},
    {"n": None},
    {"number": 1},
    {"number": "1"},
    {"string": 1},
    {"bool": True},
    {"bool": 1},
    {"float": 1.5},
    {"missing": None},
]


async def test_search_matches_what_jsonb_containment_says(stubs: Stubs, tenant: str) -> None:
    session = await a_session(stubs, tenant)
    appended = [await append(stubs, tenant, session.id, "doc", doc) for doc in DOCUMENTS]
    stored = [plain(message.content) for message in appended]
    other = tenant + "-other"
    await append(stubs, other, (await a_session(stubs, other)).id, "doc", DOCUMENTS[0])

    for query in QUERIES:
        found = await search(stubs, tenant, query)
        expected = [m.id for m, doc in zip(appended, stored, strict=True) if contains(doc, query)]
        assert [m.id for m in found.messages] == expected, query

    # Every value was bound: the table and its rows are all still there.
    assert len(await in_order(stubs, tenant, session.id)) == len(DOCUMENTS)


@pytest.mark.parametrize(
    "value",
    ["'", '"', "\\", "%", "_", "*", "?", "[", "'; DROP TABLE messages; --", "\u202e", "😀"],
)
async def test_search_takes_hostile_text_as_data(stubs: Stubs, tenant: str, value: str) -> None:
    session = await a_session(stubs, tenant)
    exact = await append(stubs, tenant, session.id, "doc", {value: value, "k": [value]})
    await append(stubs, tenant, session.id, "doc", {"k": value + "x", value + "x": value})

    by_value = await search(stubs, tenant, {value: value})
    in_array = await search(stubs, tenant, {"k": [value]})
    none = await search(stubs, tenant, {"k": value})

    assert [m.id for m in by_value.messages] == [exact.id]
    assert [m.id for m in in_array.messages] == [exact.id]
    assert list(none.messages) == []


async def test_search_within_a_session_pages_and_filters(stubs: Stubs, tenant: str) -> None:
    one, two = await a_session(stubs, tenant), await a_session(stubs, tenant)
    mine = [
        await append(stubs, tenant, one.id, "tool" if i % 2 else "user", {"hit": True, "i": i})
        for i in range(6)
    ]
    await append(stubs, tenant, one.id, "user", {"hit": False})
    await append(stubs, tenant, two.id, "user", {"hit": True})

    first = await search(stubs, tenant, {"hit": True}, one.id, page_size=4, count_mode=2)
    rest = await search(
        stubs, tenant, {"hit": True}, one.id, page_size=4, page_token=first.next_page_token
    )
    tools = await search(stubs, tenant, {"hit": True}, one.id, filter='message_type = "tool"')
    foreign = await fails(
        search(stubs, tenant, {"hit": False}, one.id, page_token=first.next_page_token)
    )

    assert [m.id for m in [*first.messages, *rest.messages]] == [m.id for m in mine]
    assert (first.total_size, rest.next_page_token) == (6, "")
    assert [m.sequence_number for m in tools.messages] == [2, 4, 6]
    assert foreign.reason == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize(
    "query",
    [
        {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}},
        {f"k{i}": i for i in range(65)},
        {"bad": float("inf")},
        {"nul": "a\x00b"},
    ],
    ids=["too deep", "too big", "infinite", "nul"],
)
async def test_search_documents_are_bounded_and_checked(
    stubs: Stubs, tenant: str, query: dict[str, Any]
) -> None:
    error = await fails(search(stubs, tenant, query))

    assert (error.code, list(error.violations)) == (INVALID, ["content"])


# ------------------------------------------------------------ with their session


async def test_soft_deleting_a_session_keeps_its_messages(stubs: Stubs, tenant: str) -> None:
    session = await a_session(stubs, tenant)
    kept = [await append(stubs, tenant, session.id) for _ in range(3)]

    await stubs.sessions.DeleteSession(
        session_pb2.DeleteSessionRequest(id=session.id), metadata=md(tenant)
    )
    await stubs.sessions.UndeleteSession(
        session_pb2.UndeleteSessionRequest(id=session.id), metadata=md(tenant)
    )
    after = await append(stubs, tenant, session.id)

    assert [m.id for m in await in_order(stubs, tenant, session.id)] == [
        *(m.id for m in kept),
        after.id,
    ]
    assert after.sequence_number == 4


async def test_purging_a_session_purges_its_messages(stubs: Stubs, tenant: str) -> None:
    session = await a_session(stubs, tenant)
    gone = [await append(stubs, tenant, session.id) for _ in range(3)]
    # Read once, so that a cache holds them.
    for message in gone:
        await stubs.messages.GetMessage(pb.GetMessageRequest(id=message.id), metadata=md(tenant))

    await stubs.sessions.DeleteSession(
        session_pb2.DeleteSessionRequest(id=session.id, force=True), metadata=md(tenant)
    )

    for message in gone:
        error = await fails(
            stubs.messages.GetMessage(pb.GetMessageRequest(id=message.id), metadata=md(tenant))
        )
        assert error.code == NOT_FOUND
    counted = await stubs.messages.CountMessages(
        pb.CountMessagesRequest(show_deleted=True), metadata=md(tenant)
    )
    assert counted.total_size == 0
