"""Field checks: each failure is an INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import uuid

import pytest

from repositories.errors import InvalidArgument
from server import validation
from server.validation import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from tests.unit.support import assert_invalid, violated_fields

pytestmark = pytest.mark.unit

USER_CHECKS = {
    "email": validation.email,
    "username": validation.username,
    "display_name": validation.max_length(256),
}


@pytest.mark.parametrize(
    "value",
    [
        "a@b.co",
        "ann@example.com",
        "Ann.Smith+tag@mail.example.co.uk",
        "x@localhost.localdomain",
        "o'brien@example.ie",
        "ü@bücher.de",
        "a" * 64 + "@" + "b" * 185 + ".com",  # 254 characters
    ],
)
def test_valid_emails(value: str) -> None:
    assert validation.email(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "@example.com",
        "ann@",
        "ann@example",
        "ann@@example.com",
        "ann@exa@mple.com",
        "an n@example.com",
        "ann@example..com",
        "ann@.example.com",
        "ann@example.com.",
        "ann@example.com\n",
        "\tann@example.com",
        "a" * 64 + "@" + "b" * 186 + ".com",  # 255 characters
    ],
)
def test_invalid_emails(value: str) -> None:
    problem = validation.email(value)
    assert problem is not None
    assert "email" in problem


def test_email_is_required() -> None:
    assert validation.email("") == "is required"


@pytest.mark.parametrize("value", ["a", "0", "ann", "Ann.Smith_2-x", "a" * 64, "9-._"])
def test_valid_usernames(value: str) -> None:
    assert validation.username(value) is None


@pytest.mark.parametrize(
    "value",
    ["a" * 65, "-ann", ".ann", "_ann", "an n", "ann!", "ann\n", "ünï", "a/b", "a@b"],
)
def test_invalid_usernames(value: str) -> None:
    assert validation.username(value) is not None


def test_username_is_required() -> None:
    assert validation.username("") == "is required"


def test_max_length() -> None:
    check = validation.max_length(3)
    assert check("") is None
    assert check("abc") is None
    assert check("abcd") == "must be at most 3 characters"
    # Characters, not bytes.
    assert check("üüü") is None


@pytest.mark.parametrize(
    ("requested", "effective"),
    [
        (0, DEFAULT_PAGE_SIZE),
        (1, 1),
        (37, 37),
        (MAX_PAGE_SIZE, MAX_PAGE_SIZE),
        (MAX_PAGE_SIZE + 1, MAX_PAGE_SIZE),
        (2**31 - 1, MAX_PAGE_SIZE),
    ],
)
def test_page_size(requested: int, effective: int) -> None:
    assert (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE) == (50, 1000)
    assert validation.page_size(requested) == effective


@pytest.mark.parametrize("requested", [-1, -(2**31)])
def test_negative_page_size(requested: int) -> None:
    with pytest.raises(InvalidArgument) as err:
        validation.page_size(requested)
    assert_invalid(err.value, "page_size")


@pytest.mark.parametrize(
    "value",
    [
        "0b6e4d8c-6a0f-4a7e-9c55-0d3b8b0f9a11",
        "0B6E4D8C-6A0F-4A7E-9C55-0D3B8B0F9A11",
    ],
)
def test_resource_id(value: str) -> None:
    assert validation.resource_id(value, "id") == uuid.UUID("0b6e4d8c-6a0f-4a7e-9c55-0d3b8b0f9a11")


@pytest.mark.parametrize(
    "value",
    [
        "0b6e4d8c6a0f4a7e9c550d3b8b0f9a11",
        "{0b6e4d8c-6a0f-4a7e-9c55-0d3b8b0f9a11}",
        "urn:uuid:0b6e4d8c-6a0f-4a7e-9c55-0d3b8b0f9a11",
        "{0b6e4d8c6a0f4a7e9c550d3b8b0f9a11}",
    ],
)
def test_resource_id_in_another_spelling_says_which_form(value: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validation.resource_id(value, "id")
    assert_invalid(err.value, "id")
    assert "8-4-4-4-12" in err.value.violations[0].description


@pytest.mark.parametrize(
    ("value", "description"),
    [
        ("", "is required"),
        ("42", "must be a UUID"),
        ("not-a-uuid", "must be a UUID"),
        ("0b6e4d8c-6a0f-4a7e-9c55-0d3b8b0f9a1", "must be a UUID"),
        ("0b6e4d8c-6a0f-4a7e-9c55-0d3b8b0f9a11x", "must be a UUID"),
        ("zb6e4d8c-6a0f-4a7e-9c55-0d3b8b0f9a11", "must be a UUID"),
    ],
)
def test_invalid_resource_id(value: str, description: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validation.resource_id(value, "user.id")
    assert_invalid(err.value, "user.id")
    assert err.value.violations[0].description == description


def test_require_reports_every_missing_field_sorted() -> None:
    required = frozenset({"username", "email", "zeta", "alpha", "mid", "beta"})
    with pytest.raises(InvalidArgument) as err:
        validation.require({"username": "", "mid": "present", "other": "x"}, required, "user")
    expected = ["user.alpha", "user.beta", "user.email", "user.username", "user.zeta"]
    assert violated_fields(err.value) == expected
    assert {v.description for v in err.value.violations} == {"is required"}
    assert err.value.reason == "INVALID_ARGUMENT"
    assert err.value.message == f"missing required fields: {', '.join(expected)}"


def test_require_passes_when_present() -> None:
    validation.require({"email": "a@b.co", "username": "a"}, frozenset({"email", "username"}), "u")
    validation.require({}, frozenset(), "u")


def test_check_fields_reports_every_failure_at_once() -> None:
    values = {"email": "nope", "username": "-bad", "display_name": "x" * 257}
    with pytest.raises(InvalidArgument) as err:
        validation.check_fields(values, USER_CHECKS, "user")
    assert violated_fields(err.value) == ["user.email", "user.username", "user.display_name"]
    assert all(v.description for v in err.value.violations)
    for field in violated_fields(err.value):
        assert field in err.value.message


def test_check_fields_only_checks_what_is_present_and_checkable() -> None:
    validation.check_fields(
        {"email": "a@b.co", "is_active": False, "unknown": object()}, USER_CHECKS, "user"
    )
    with pytest.raises(InvalidArgument) as err:
        validation.check_fields({"display_name": "x" * 257}, USER_CHECKS, "user")
    assert violated_fields(err.value) == ["user.display_name"]


@pytest.mark.parametrize("field", ["email", "username", "display_name", "unchecked"])
def test_check_fields_rejects_nul_characters(field: str) -> None:
    values = {"email": "a@b.co", "username": "ann", "display_name": "Ann", "unchecked": "x"}
    values[field] = {"email": "a\x00@b.co", "username": "an\x00n"}.get(field, "A\x00nn")
    with pytest.raises(InvalidArgument) as err:
        validation.check_fields(values, USER_CHECKS, "user")
    assert violated_fields(err.value) == [f"user.{field}"]


@pytest.mark.parametrize("count", [1, 2, validation.MAX_BATCH])
def test_batch_sizes_within_bounds(count: int) -> None:
    validation.batch_size(count, "requests")


@pytest.mark.parametrize("count", [0, validation.MAX_BATCH + 1])
def test_batch_sizes_out_of_bounds(count: int) -> None:
    with pytest.raises(InvalidArgument) as err:
        validation.batch_size(count, "requests")
    assert_invalid(err.value, "requests")


def test_request_id_is_a_uuid_in_either_case() -> None:
    key = uuid.uuid4()
    for text in (str(key), str(key).upper()):
        assert validation.request_id(text) == key
    for text in (key.hex, f"{{{key}}}", key.urn):
        with pytest.raises(InvalidArgument):
            validation.request_id(text)


@pytest.mark.parametrize("text", ["x", "1234", str(uuid.uuid4())[:-1], "\x00"])
def test_request_id_rejects_what_is_not_a_uuid(text: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validation.request_id(text)
    assert_invalid(err.value, "request_id")


def test_distinct_names_the_later_of_two_repeats() -> None:
    validation.distinct(["a", "b", "c"], "requests[{}].id", "id")
    with pytest.raises(InvalidArgument) as err:
        validation.distinct(["a", "b", "c", "b"], "requests[{}].id", "id")
    assert_invalid(err.value, "requests[3].id")
    assert "item 1" in err.value.violations[0].description
