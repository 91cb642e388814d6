"""What the domain resources add to the generic core, without a database: JSON,
enum, reference and decimal fields in the mapping; immutable fields; the checks;
lifecycles; exact decimals in SQL."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy.dialects import postgresql, sqlite

from repogate.v1 import job_pb2, session_pb2
from repositories.errors import InvalidArgument
from repositories.jobs import LIFECYCLE as JOBS
from repositories.sessions import LIFECYCLE as SESSIONS
from repositories.tables import JOB_STATUSES, SESSION_STATUSES
from repositories.types import FixedDecimal
from server import validation
from server.mapping import MessageMapping, json_object, stored_enum_names
from server.services.sessions import SESSION
from tests.e2e.domain import struct
from tests.unit.support import assert_invalid

pytestmark = pytest.mark.unit

ID = uuid.UUID("5f0c9f1e-2b8f-4f6e-9d7a-1c2b3d4e5f60")
USER_ID = uuid.UUID("0b6e4d8c-6a0f-4a7e-9c55-0d3b8b0f9a11")
NOW = datetime(2031, 5, 17, 8, 30, tzinfo=UTC)


def session_row(**overrides: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "id": ID,
        "user_id": USER_ID,
        "name": "Chat",
        "status": "processing",
        "preferences": {"theme": "dark", "sizes": [1, 2.5], "nested": {"ok": True, "x": None}},
        "total_messages": 3,
        "total_tool_calls": 1,
        "total_cost_usd": Decimal("1.250000000"),
        "input_tokens": 10,
        "output_tokens": 5,
        "last_sequence_number": 3,
        "last_access_time": NOW,
        "completed_time": None,
        "version": 4,
        "create_time": NOW,
        "update_time": NOW,
        "delete_time": None,
        "purge_time": None,
        "created_by": None,
        "updated_by": None,
        **overrides,
    }


mapping: MessageMapping[session_pb2.Session] = SESSION.mapping


def test_a_row_becomes_a_session() -> None:
    message = mapping.to_message(session_row())

    assert message.id == str(ID)
    assert message.user_id == str(USER_ID)
    assert message.status == session_pb2.SESSION_STATUS_PROCESSING
    assert json_object(message.preferences) == {
        "theme": "dark",
        "sizes": [1, 2.5],
        "nested": {"ok": True, "x": None},
    }
    assert message.total_cost_usd == "1.25"
    assert message.etag == "4"
    assert not message.HasField("completed_time")


@pytest.mark.parametrize(
    ("stored", "text"),
    [(Decimal(0), "0"), (Decimal("100.000000000"), "100"), (Decimal("0.000000001"), "0.000000001")],
)
def test_exact_decimals_are_plain_text(stored: Decimal, text: str) -> None:
    assert mapping.to_message(session_row(total_cost_usd=stored)).total_cost_usd == text


def test_a_session_becomes_values() -> None:
    message = session_pb2.Session(
        user_id=str(USER_ID).upper(),
        status=session_pb2.SESSION_STATUS_WAITING,
        preferences=struct({"n": 2, "f": 2.5, "big": 2.0**60, "list": [1, "a"]}),
        total_messages=99,  # output only
    )

    paths = mapping.populated(message)
    values = mapping.to_values(message, paths)

    assert sorted(paths) == ["preferences", "status", "user_id"]
    assert values["user_id"] == USER_ID
    assert values["status"] == "waiting"
    # Struct holds doubles: integral ones come back as ints, up to 2**53.
    assert values["preferences"] == {"n": 2, "f": 2.5, "big": 2.0**60, "list": [1, "a"]}
    assert isinstance(values["preferences"]["n"], int)
    assert isinstance(values["preferences"]["big"], float)


def test_unset_and_unknown_enum_values_are_left_for_the_checks() -> None:
    unset = mapping.to_values(session_pb2.Session(), ["status"])
    unknown = mapping.to_values(session_pb2.Session(status=42), ["status"])  # type: ignore[arg-type]

    check = SESSION.checks["status"]
    assert unset == {"status": None}
    assert check(None) == "must be set"
    assert unknown == {"status": 42}
    assert check(42) is not None
    assert check("waiting") is None


def test_a_malformed_reference_is_left_for_its_check() -> None:
    values = mapping.to_values(session_pb2.Session(user_id="nope"), ["user_id"])

    assert values == {"user_id": "nope"}
    assert validation.uuid_text("nope") == "must be a UUID"
    assert validation.uuid_text("") == "is required"
    assert validation.uuid_text(USER_ID) is None


def test_stored_enum_names_follow_the_proto() -> None:
    assert tuple(stored_enum_names(session_pb2.SessionStatus.DESCRIPTOR).values()) == (
        SESSION_STATUSES
    )
    assert tuple(stored_enum_names(job_pb2.JobStatus.DESCRIPTOR).values()) == JOB_STATUSES


def test_immutable_fields_are_set_on_create_only() -> None:
    message = session_pb2.Session(user_id=str(USER_ID), name="n")
    masked = field_mask_pb2.FieldMask(paths=["user_id"])

    assert "user_id" in mapping.populated(message)
    assert mapping.mask_paths(message, None) == ["name"]
    assert "user_id" not in mapping.mask_paths(message, field_mask_pb2.FieldMask(paths=["*"]))
    with pytest.raises(InvalidArgument) as err:
        mapping.mask_paths(message, masked)
    assert_invalid(err.value, "update_mask")
    assert "cannot change after create" in err.value.message


def test_a_mapping_refuses_unknown_references() -> None:
    with pytest.raises(ValueError, match="owner_id"):
        MessageMapping(session_pb2.Session, updatable={"name"}, references={"owner_id"})


# ------------------------------------------------------------ checks


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"a": [1, {"b": "c"}]}, None),
        ({"a": math.inf}, "must not hold NaN or infinite numbers"),
        ({"a": [math.nan]}, "must not hold NaN or infinite numbers"),
        ({"a\x00": 1}, "must not contain NUL characters"),
        ({"a": {"b": "x\x00"}}, "must not contain NUL characters"),
    ],
)
def test_json_documents(document: dict[str, Any], problem: str | None) -> None:
    assert validation.json_document(document) == problem


def test_json_documents_are_bounded_in_depth() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(validation.MAX_JSON_DEPTH + 1):
        node["a"] = {}
        node = node["a"]

    assert validation.json_document(deep) == "must not nest deeper than 32 levels"


@pytest.mark.parametrize(
    "text", ["", "-1", "1.", ".5", "1e3", "1,5", "12345678901", "0.1234567890", " 1", "\u0661"]
)
def test_amounts_refuse_what_is_not_a_plain_decimal(text: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validation.amount(text, "total_cost_usd")
    assert_invalid(err.value, "total_cost_usd")


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", Decimal(0)), ("9999999999.999999999", Decimal("9999999999.999999999"))],
)
def test_amounts(text: str, value: Decimal) -> None:
    assert validation.amount(text, "x") == value


@pytest.mark.parametrize(
    ("name", "ok"),
    [("user", True), ("tool_use", True), ("a.b:c/d-e", True), ("-x", False), ("a b", False)],
)
def test_tokens(name: str, ok: bool) -> None:
    assert (validation.token(64)(name) is None) is ok


# ------------------------------------------------------------ lifecycles and decimals


def test_job_lifecycle() -> None:
    assert JOBS.sources("running") == {"pending"}
    assert JOBS.sources("completed") == {"running"}
    assert JOBS.sources("cancelled") == {"pending", "running"}
    assert JOBS.sources("pending") == frozenset()


def test_finished_sessions_are_final() -> None:
    for finished in ("completed", "failed", "terminated"):
        assert all(finished not in SESSIONS.sources(target) for target in SESSION_STATUSES)
    assert SESSIONS.sources("active") == {"created", "waiting", "processing"}


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()])
def test_fixed_decimals_are_exact_integers_in_sql(dialect: Any) -> None:
    column = FixedDecimal(9)

    assert column.process_bind_param(Decimal("1.000000001"), dialect) == 1_000_000_001
    assert column.process_bind_param(0.1, dialect) == 100_000_000
    assert column.process_result_value(1_500_000_000, dialect) == Decimal("1.5")
    assert column.process_bind_param(None, dialect) is None
