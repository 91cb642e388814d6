"""The built-in services' masks and upserts, through the real server on SQLite and
PostgreSQL: `read_mask` on every Get, List and BatchGet, `update_mask` paths into a
session's preferences, and `allow_missing` on UpdateUser and UpdateSession."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format

from repogate.v1 import job_pb2, message_pb2, session_pb2, user_pb2
from tests.e2e.domain import Stubs, append, new_session, new_user, struct
from tests.e2e.support import fails
from tests.rpc import md

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def shown(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


async def test_read_mask_on_every_built_in_resource(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    session = await new_session(
        stubs, tenant, user.id, name="chat", preferences=struct({"theme": "dark", "n": 1})
    )
    message = await append(stubs, tenant, session.id)
    job = await stubs.jobs.CreateJob(
        job_pb2.CreateJobRequest(job=job_pb2.Job(job_type="mail", payload=struct({"to": "a"}))),
        metadata=md(tenant),
    )
    on = md(tenant)

    got = await stubs.users.GetUser(
        user_pb2.GetUserRequest(id=user.id, read_mask=mask("email", "etag")), metadata=on
    )
    assert shown(got) == {"email": user.email, "etag": user.etag}
    users = await stubs.users.ListUsers(
        user_pb2.ListUsersRequest(read_mask=mask("username")), metadata=on
    )
    assert [shown(u) for u in users.users] == [{"username": "ann"}]
    batch = await stubs.users.BatchGetUsers(
        user_pb2.BatchGetUsersRequest(ids=[user.id], read_mask=mask("id")), metadata=on
    )
    assert [shown(u) for u in batch.users] == [{"id": user.id}]

    got_session = await stubs.sessions.GetSession(
        session_pb2.GetSessionRequest(id=session.id, read_mask=mask("name", "preferences.theme")),
        metadata=on,
    )
    assert shown(got_session) == {"name": "chat", "preferences": {"theme": "dark"}}
    sessions = await stubs.sessions.ListSessions(
        session_pb2.ListSessionsRequest(read_mask=mask("id")), metadata=on
    )
    assert [shown(s) for s in sessions.sessions] == [{"id": session.id}]

    messages = await stubs.messages.BatchGetMessages(
        message_pb2.BatchGetMessagesRequest(ids=[message.id], read_mask=mask("sequence_number")),
        metadata=on,
    )
    assert [shown(m) for m in messages.messages] == [
        {"sequence_number": "1"}
    ]  # int64: text in JSON
    got_job = await stubs.jobs.GetJob(
        job_pb2.GetJobRequest(id=job.id, read_mask=mask("job_type", "payload.to")), metadata=on
    )
    assert shown(got_job) == {"job_type": "mail", "payload": {"to": "a"}}

    error = await fails(
        stubs.users.GetUser(
            user_pb2.GetUserRequest(id=user.id, read_mask=mask("password")), metadata=on
        )
    )
    assert (error.code, list(error.violations)) == (INVALID, ["read_mask"])
    other = await fails(
        stubs.users.GetUser(
            user_pb2.GetUserRequest(id=user.id, read_mask=mask("email")),
            metadata=md(f"other-{tenant}"),
        )
    )
    assert other.code == NOT_FOUND


async def test_a_session_preference_updated_alone(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    session = await new_session(
        stubs, tenant, user.id, preferences=struct({"theme": "light", "lang": "en"})
    )
    request = session_pb2.UpdateSessionRequest(
        session=session_pb2.Session(id=session.id, preferences=struct({"theme": "dark"})),
        update_mask=mask("preferences.theme", "preferences.font"),
    )
    done = await stubs.sessions.UpdateSession(request, metadata=md(tenant))
    assert shown(done)["preferences"] == {"theme": "dark", "lang": "en"}

    error = await fails(stubs.sessions.UpdateSession(request, metadata=md(f"other-{tenant}")))
    assert error.code == NOT_FOUND
    nested = session_pb2.UpdateSessionRequest(
        session=session_pb2.Session(id=session.id),
        update_mask=mask("preferences", "preferences.theme"),
    )
    error = await fails(stubs.sessions.UpdateSession(nested, metadata=md(tenant)))
    assert (error.code, list(error.violations)) == (INVALID, ["update_mask"])


async def test_update_user_with_allow_missing_creates_it(stubs: Stubs, tenant: str) -> None:
    key = str(uuid.uuid4())

    def upsert(**fields: Any) -> user_pb2.UpdateUserRequest:
        return user_pb2.UpdateUserRequest(
            user=user_pb2.User(id=key, **fields),
            update_mask=mask("display_name"),
            allow_missing=True,
        )

    error = await fails(stubs.users.UpdateUser(upsert(display_name="Ann"), metadata=md(tenant)))
    assert error.code == INVALID
    assert set(error.violations) == {"user.email", "user.username"}

    made = await stubs.users.UpdateUser(
        upsert(email="ann@example.com", username="ann", display_name="Ann"), metadata=md(tenant)
    )
    assert (made.id, made.etag, made.email, made.is_active) == (key, "1", "ann@example.com", True)
    again = await stubs.users.UpdateUser(
        upsert(email="changed@example.com", username="ann", display_name="Annie"),
        metadata=md(tenant),
    )
    assert (again.etag, again.email, again.display_name) == ("2", "ann@example.com", "Annie")

    # Another tenant's user with this id is none of this tenant's: it gets its own.
    theirs = await stubs.users.UpdateUser(
        upsert(email="bob@example.com", username="bob"), metadata=md(f"other-{tenant}")
    )
    assert (theirs.id, theirs.etag, theirs.email) == (key, "1", "bob@example.com")
    mine = await stubs.users.GetUser(user_pb2.GetUserRequest(id=key), metadata=md(tenant))
    assert mine == again


async def test_update_session_with_allow_missing_creates_it(stubs: Stubs, tenant: str) -> None:
    user = await new_user(stubs, tenant)
    key = str(uuid.uuid4())
    request = session_pb2.UpdateSessionRequest(
        session=session_pb2.Session(
            id=key, user_id=user.id, name="agent run", preferences=struct({"theme": "dark"})
        ),
        update_mask=mask("preferences.theme"),
        allow_missing=True,
    )
    made = await stubs.sessions.UpdateSession(request, metadata=md(tenant))
    assert (made.id, made.etag, made.name, made.status) == (
        key,
        "1",
        "agent run",
        session_pb2.SESSION_STATUS_CREATED,
    )
    assert shown(made)["preferences"] == {"theme": "dark"}
    request.session.preferences.update({"theme": "light"})
    again = await stubs.sessions.UpdateSession(request, metadata=md(tenant))
    assert (again.etag, shown(again)["preferences"]) == ("2", {"theme": "light"})

    # A session needs a live user of this tenant, upserted or created: another tenant's
    # upsert naming this user creates nothing.
    request.session.id = str(uuid.uuid4())
    error = await fails(stubs.sessions.UpdateSession(request, metadata=md(f"other-{tenant}")))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "USER_NOT_LIVE")
    gone = await fails(
        stubs.sessions.GetSession(
            session_pb2.GetSessionRequest(id=request.session.id), metadata=md(f"other-{tenant}")
        )
    )
    assert gone.code == NOT_FOUND
