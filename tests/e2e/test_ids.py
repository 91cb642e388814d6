"""Ids through a real server: one spelling per resource (8-4-4-4-12 hex digits, either
case, answered in lower case) in every field that holds one, and a BatchGet that names
one resource twice (in either case) is refused, for every entity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from repogate.v1 import job_pb2, message_pb2, session_pb2, user_pb2
from tests.e2e.domain import Stubs, append, enqueue, new_session, new_user
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT


Spell = Callable[[str], str]
# Other ways uuid.UUID() reads an id, none of them the 8-4-4-4-12 form.
SPELLINGS: dict[str, Spell] = {
    "braces": lambda id_: "{" + id_ + "}",
    "urn": lambda id_: "urn:uuid:" + id_,
    "hex-only": lambda id_: id_.replace("-", ""),
    "braced-hex": lambda id_: "{" + id_.replace("-", "") + "}",
}
REQUEST_ID = "3f2c1a70-5b7e-4d8e-9a41-7c6b5d4e3f21"


@pytest.fixture
async def made(server, tenant: str) -> dict[str, Any]:
    """A user, a session of theirs, a message in it and a job, in the test's tenant."""
    stubs = Stubs.on(server.channel)
    user = await new_user(stubs, tenant)
    session = await new_session(stubs, tenant, user.id)
    message = await append(stubs, tenant, session.id)
    job = await enqueue(stubs, tenant)
    return {"stubs": stubs, "user": user, "session": session, "message": message, "job": job}


def id_fields(
    made: dict[str, Any], tenant: str, spell: Spell
) -> dict[str, Callable[[], Awaitable[Any]]]:
    """A call per kind of field that holds an id, sending the id spelled by `spell`."""
    s: Stubs = made["stubs"]
    m = md(tenant)
    user_id, session_id = spell(made["user"].id), spell(made["session"].id)
    user = user_pb2.User(id=user_id, display_name="x")
    new = user_pb2.User(email="r@example.com", username="r")
    return {
        "id": lambda: s.users.GetUser(user_pb2.GetUserRequest(id=user_id), metadata=m),
        "ids[0]": lambda: s.users.BatchGetUsers(
            user_pb2.BatchGetUsersRequest(ids=[user_id]), metadata=m
        ),
        "user.id": lambda: s.users.UpdateUser(user_pb2.UpdateUserRequest(user=user), metadata=m),
        "session.user_id": lambda: s.sessions.CreateSession(
            session_pb2.CreateSessionRequest(session=session_pb2.Session(user_id=user_id)),
            metadata=m,
        ),
        "user_id": lambda: s.sessions.CountActiveSessions(
            session_pb2.CountActiveSessionsRequest(user_id=user_id), metadata=m
        ),
        "session_id": lambda: s.messages.GetLatestMessage(
            message_pb2.GetLatestMessageRequest(session_id=session_id), metadata=m
        ),
        "request_id": lambda: s.users.CreateUser(
            user_pb2.CreateUserRequest(user=new, request_id=spell(REQUEST_ID)), metadata=m
        ),
        "filter": lambda: s.sessions.ListSessions(
            session_pb2.ListSessionsRequest(filter=f'user_id = "{user_id}"'), metadata=m
        ),
    }


FIELDS = [
    "id",
    "ids[0]",
    "user.id",
    "session.user_id",
    "user_id",
    "session_id",
    "request_id",
    "filter",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("field", FIELDS)
async def test_other_spellings_of_an_id_are_refused_in_every_id_field(
    made, tenant: str, field: str, spelling: str
) -> None:
    call = id_fields(made, tenant, SPELLINGS[spelling])[field]

    error = await fails(call())

    assert error.code == INVALID, error
    assert list(error.violations) == [field], error
    if field == "filter":
        assert error.reason == "INVALID_FILTER"


@pytest.mark.parametrize("spell", [str.lower, str.upper], ids=["lower-case", "upper-case"])
async def test_either_case_names_the_same_resource_in_every_id_field(
    made, tenant: str, spell: Spell
) -> None:
    user, session, message = made["user"], made["session"], made["message"]
    calls = id_fields(made, tenant, spell)

    answers = {field: await call() for field, call in calls.items()}

    # Answered in lower case, whichever case was sent.
    assert answers["id"] == user
    assert user.id == user.id.lower()
    assert list(answers["ids[0]"].users) == [user]
    assert answers["user.id"].id == user.id
    assert answers["session.user_id"].user_id == user.id
    assert answers["user_id"].active_count == 0
    assert answers["session_id"] == message
    assert answers["request_id"].username == "r"
    listed = {s.id for s in answers["filter"].sessions}
    assert listed == {session.id, answers["session.user_id"].id}


# A batch may not name one resource twice (README, Batches)


def batch_gets(
    made: dict[str, Any], tenant: str
) -> dict[str, Callable[[list[str]], Awaitable[Any]]]:
    s: Stubs = made["stubs"]
    m = md(tenant)
    return {
        "user": lambda ids: s.users.BatchGetUsers(
            user_pb2.BatchGetUsersRequest(ids=ids), metadata=m
        ),
        "session": lambda ids: s.sessions.BatchGetSessions(
            session_pb2.BatchGetSessionsRequest(ids=ids), metadata=m
        ),
        "message": lambda ids: s.messages.BatchGetMessages(
            message_pb2.BatchGetMessagesRequest(ids=ids), metadata=m
        ),
        "job": lambda ids: s.jobs.BatchGetJobs(job_pb2.BatchGetJobsRequest(ids=ids), metadata=m),
    }


ENTITIES = ["user", "session", "message", "job"]


@pytest.mark.parametrize("entity", ENTITIES)
async def test_batch_get_naming_a_resource_twice_is_refused(made, tenant: str, entity: str) -> None:
    id_ = made[entity].id
    others = [f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2)]

    error = await fails(batch_gets(made, tenant)[entity]([id_, *others, id_]))

    assert error.code == INVALID
    assert error.reason == "INVALID_ARGUMENT"
    assert list(error.violations) == ["ids[3]"]
    assert "item 0" in error.violations["ids[3]"]


@pytest.mark.parametrize("entity", ENTITIES)
async def test_batch_get_naming_a_resource_twice_in_two_cases_is_refused(
    made, tenant: str, entity: str
) -> None:
    id_ = made[entity].id

    error = await fails(batch_gets(made, tenant)[entity]([id_, id_.upper()]))

    assert list(error.violations) == ["ids[1]"]


@pytest.mark.parametrize("entity", ENTITIES)
async def test_batch_get_of_distinct_resources_still_answers_in_order(
    made, tenant: str, entity: str
) -> None:
    id_ = made[entity].id

    answer = await batch_gets(made, tenant)[entity]([id_])

    (items,) = [value for _, value in answer.ListFields()]
    assert [item.id for item in items] == [id_]
