"""asyncpg's own failures, which SQLAlchemy passes on unwrapped or as an InterfaceError: the
driver's side of the connection failing is Unavailable (a database fault for the breaker),
while a value the driver cannot send stays the caller's fault."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from repositories.errors import Unavailable, translate_db_errors

pytestmark = pytest.mark.unit


def wrapped(driver_error: Exception) -> sa_exc.InterfaceError:
    """As SQLAlchemy's asyncpg dialect raises an asyncpg InterfaceError."""
    orig = Exception(str(driver_error))
    orig.__cause__ = driver_error
    return sa_exc.InterfaceError("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    "raised",
    [
        asyncpg.exceptions.ProtocolError("unexpected message"),
        asyncpg.exceptions.OutdatedSchemaCacheError("cache lookup failed", schema="", data_type=""),
        wrapped(asyncpg.exceptions.InterfaceError("another operation is in progress")),
    ],
    ids=["protocol", "schema-cache", "interface"],
)
def test_driver_failures_are_unavailable(raised: Exception) -> None:
    with pytest.raises(Unavailable) as err, translate_db_errors():
        raise raised

    assert err.value.__cause__ is raised
    assert "asyncpg" not in err.value.message


def test_a_value_the_driver_cannot_send_is_not_a_database_fault() -> None:
    raised = wrapped(asyncpg.exceptions._base.DataError("invalid input for query argument $1"))

    with pytest.raises(sa_exc.InterfaceError), translate_db_errors():
        raise raised
