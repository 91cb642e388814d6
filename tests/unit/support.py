"""Assertions shared by the unit tests."""

from __future__ import annotations

from repositories.errors import InvalidArgument


def violated_fields(error: InvalidArgument) -> list[str]:
    return [violation.field for violation in error.violations]


def assert_invalid(error: InvalidArgument, field: str, reason: str = "INVALID_ARGUMENT") -> None:
    """`error` is a single-field INVALID_ARGUMENT for `field`, with a description."""
    assert isinstance(error, InvalidArgument)
    assert error.reason == reason
    assert violated_fields(error) == [field]
    assert error.violations[0].description
    assert field in error.message
