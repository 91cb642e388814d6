"""Requests that cannot be parsed, through a real server: bytes that are not the message,
invalid UTF-8, messages nested past protobuf's limit. Each is INVALID_ARGUMENT
`MALFORMED_REQUEST` with the request id, counted like any other refusal, and logs no
traceback; JSON documents nest as deep as the README says, and no deeper."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2

from repogate.v1 import admin_pb2, admin_pb2_grpc, session_pb2, transaction_pb2
from server.validation import MAX_JSON_DEPTH
from tests.e2e.domain import Stubs, new_user, plain
from tests.e2e.support import StartRepogate, fails
from tests.e2e.test_auth import SECRET
from tests.e2e.test_metrics import scrape, value
from tests.rpc import ErrorDetails, details, md

pytestmark = pytest.mark.e2e

INVALID = grpc.StatusCode.INVALID_ARGUMENT
# A string field (GetUserRequest.id, field 1) holding two bytes that are not UTF-8.
BAD_UTF8 = b"\x0a\x02\xff\xfe"
# A tag with field number 0 and wire type 7: no message has it.
NOT_PROTOBUF = b"\xff\xff\xff\xff"
# Field 1 announces five bytes and two follow.
TRUNCATED = b"\x0a\x05ab"
UNPARSABLE = {"bad-utf8": BAD_UTF8, "not-protobuf": NOT_PROTOBUF, "truncated": TRUNCATED}
# One method of every Repogate service, AdminService (no tenant) included.
METHODS = [
    "/repogate.v1.UserService/GetUser",
    "/repogate.v1.SessionService/CreateSession",
    "/repogate.v1.MessageService/AppendMessage",
    "/repogate.v1.JobService/ClaimNextJob",
    "/repogate.v1.TransactionService/BeginTransaction",
    "/repogate.v1.CacheService/Get",
    "/repogate.v1.AdminService/GetStats",
]


async def send_raw(channel: grpc.aio.Channel, method: str, body: bytes, tenant: str) -> Any:
    """Sends `body` as it is, as a client with no stubs (or a broken one) would."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    return await call(body, metadata=md(tenant, x_request_id="req-malformed"), timeout=10)


async def refusal(channel: grpc.aio.Channel, method: str, body: bytes, tenant: str) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await send_raw(channel, method, body, tenant)
    return details(err.value)


def assert_malformed(error: ErrorDetails) -> None:
    assert error.code == INVALID, error
    assert error.reason == "MALFORMED_REQUEST", error
    assert error.metadata["request_id"] == "req-malformed"
    assert "Traceback" not in error.message
    assert "DecodeError" not in error.message


# GetStatsRequest has no fields: its field 1 is unknown, kept as bytes, and not UTF-8
# at all (protobuf's rule for unknown fields), so BAD_UTF8 is a valid GetStatsRequest.
CASES = [
    (method, name)
    for method in METHODS
    for name in UNPARSABLE
    if not (method.endswith("/GetStats") and name == "bad-utf8")
]


@pytest.mark.parametrize(("method", "body"), CASES)
async def test_bytes_that_do_not_parse_are_malformed_request(
    server, tenant: str, method: str, body: str
) -> None:
    error = await refusal(server.channel, method, UNPARSABLE[body], tenant)

    assert_malformed(error)
    assert error.metadata["message_type"].startswith("repogate.v1.")
    assert error.metadata["message_type"] in error.message


async def test_the_message_says_what_does_not_parse(server, tenant: str) -> None:
    error = await refusal(server.channel, "/repogate.v1.UserService/GetUser", BAD_UTF8, tenant)

    assert_malformed(error)
    assert error.metadata["message_type"] == "repogate.v1.GetUserRequest"
    assert "UTF-8" in error.message


async def test_a_malformed_request_is_counted_and_logs_no_traceback(
    start_repogate: StartRepogate, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = await start_repogate(metrics_listen="127.0.0.1:0")
    caplog.set_level(logging.INFO)

    for body in UNPARSABLE.values():
        assert_malformed(
            await refusal(app.channel, "/repogate.v1.UserService/GetUser", body, tenant)
        )

    stats = await admin_pb2_grpc.AdminServiceStub(app.channel).GetStats(admin_pb2.GetStatsRequest())
    get_user = {m.method: m for m in stats.methods}["repogate.v1.UserService/GetUser"]
    # Counted as calls; not server faults (the caller sent them).
    assert (get_user.count, get_user.server_errors) == (3, 0)
    samples = await scrape(app)
    handled = value(
        samples,
        "grpc_server_handled_total",
        grpc_type="unary",
        grpc_service="repogate.v1.UserService",
        grpc_method="GetUser",
        grpc_code="InvalidArgument",
    )
    assert handled == 3
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_unparsable_bytes_are_refused_before_authentication(
    start_repogate: StartRepogate, tenant: str
) -> None:
    # No credential makes them parse; the answer says what is wrong with the call itself.
    app = await start_repogate(auth_mode="jwt", jwt_secret=SECRET)

    error = await refusal(app.channel, "/repogate.v1.UserService/GetUser", BAD_UTF8, tenant)

    assert_malformed(error)


async def test_a_malformed_call_inside_transact_names_the_call(server, tenant: str) -> None:
    stubs = Stubs.on(server.channel)
    good = any_pb2.Any()
    good.Pack(session_pb2.CountSessionsRequest())
    broken = any_pb2.Any(type_url="type.googleapis.com/repogate.v1.GetUserRequest", value=BAD_UTF8)
    calls = [
        transaction_pb2.TransactCall(
            method="repogate.v1.SessionService/CountSessions", request=good
        ),
        transaction_pb2.TransactCall(method="repogate.v1.UserService/GetUser", request=broken),
    ]

    error = await fails(
        stubs.txs.Transact(transaction_pb2.TransactRequest(calls=calls), metadata=md(tenant))
    )

    assert error.code == INVALID
    assert error.reason == "MALFORMED_REQUEST"
    assert list(error.violations) == ["calls[1].request"]
    assert "UTF-8" in error.violations["calls[1].request"]


# How deep a JSON document may nest. A JSON object costs protobuf three levels
# (Struct, its map entry, Value); the deepest request holds a Struct three levels down
# (BatchCreateSessionsRequest.requests.session.preferences), and protobuf's limit is 100.


def nested(depth: int, leaf: Any = "leaf") -> dict[str, Any]:
    """A JSON object whose deepest value sits `depth` levels down."""
    document: Any = leaf
    for _ in range(depth):
        document = {"k": document}
    assert isinstance(document, dict)
    return document


def listed(depth: int) -> dict[str, Any]:
    """A JSON object whose deepest value sits `depth` levels down, inside lists, which
    protobuf nests more cheaply than objects."""
    document: Any = "leaf"
    for _ in range(depth - 1):
        document = [document]
    return {"k": document}


def batch_create(user_id: str, document: dict[str, Any]) -> session_pb2.BatchCreateSessionsRequest:
    request = session_pb2.BatchCreateSessionsRequest()
    session = request.requests.add().session
    session.user_id = user_id
    # Filled in place: building a Struct apart and copying it in would hit protobuf's
    # limit in the client.
    session.preferences.update(document)
    return request


def create(user_id: str, document: dict[str, Any]) -> session_pb2.CreateSessionRequest:
    request = session_pb2.CreateSessionRequest()
    request.session.user_id = user_id
    request.session.preferences.update(document)
    return request


async def sessions_of(stubs: Stubs, tenant: str) -> list[session_pb2.Session]:
    page = await stubs.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=md(tenant))
    return list(page.sessions)


# As the README and the protos say.
DEPTH = 32


def test_the_check_allows_the_documented_depth() -> None:
    assert MAX_JSON_DEPTH == DEPTH


@pytest.mark.parametrize(
    "document",
    [nested(DEPTH), nested(DEPTH, {}), listed(DEPTH)],
    ids=["objects", "empty-object-leaf", "lists"],
)
async def test_a_document_as_deep_as_documented_is_accepted_by_every_write(
    server, tenant: str, document: dict[str, Any]
) -> None:
    stubs = Stubs.on(server.channel)
    user = await new_user(stubs, tenant)

    created = await stubs.sessions.CreateSession(create(user.id, document), metadata=md(tenant))
    batch = await stubs.sessions.BatchCreateSessions(
        batch_create(user.id, document), metadata=md(tenant)
    )

    assert plain(created.preferences) == document
    assert plain(batch.sessions[0].preferences) == document
    listed_back = await sessions_of(stubs, tenant)
    assert [plain(s.preferences) for s in listed_back] == [document, document]


@pytest.mark.parametrize(
    "document",
    [nested(DEPTH + 1), listed(DEPTH + 1), nested(40), nested(200)],
    ids=["objects-one-deeper", "lists-one-deeper", "objects-40", "objects-200"],
)
async def test_a_document_deeper_than_documented_is_refused_by_every_write(
    server, tenant: str, document: dict[str, Any]
) -> None:
    stubs = Stubs.on(server.channel)
    user = await new_user(stubs, tenant)

    for call in (
        lambda: stubs.sessions.CreateSession(create(user.id, document), metadata=md(tenant)),
        lambda: stubs.sessions.BatchCreateSessions(
            batch_create(user.id, document), metadata=md(tenant)
        ),
    ):
        error = await fails(call())
        assert error.code == INVALID, error
        # Refused by protobuf (MALFORMED_REQUEST) or by Repogate's own check, which
        # names the field; either way nothing is written.
        if error.reason == "MALFORMED_REQUEST":
            assert f"a JSON document may nest {DEPTH} levels" in error.message
        else:
            assert error.reason == "INVALID_ARGUMENT"
            (field,) = error.violations
            assert field.endswith("session.preferences")
            assert f"{DEPTH} levels" in error.violations[field]

    assert await sessions_of(stubs, tenant) == []
