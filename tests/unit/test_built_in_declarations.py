"""The built-in resources are declared in their protos' options like any schema's: the
generic layers read what each sorts, filters and writes from there. Their tables are the
Alembic history's; these tests keep the two in step."""

from __future__ import annotations

from typing import Any

import pytest

from repogate.v1 import job_pb2, message_pb2, session_pb2, user_pb2
from repositories import tables
from schema.model import STANDARD_FIELDS, resource_spec

pytestmark = pytest.mark.unit

BUILT_IN = [
    (user_pb2.User, tables.users),
    (session_pb2.Session, tables.sessions),
    (message_pb2.Message, tables.messages),
    (job_pb2.Job, tables.jobs),
]
# Columns the generic repository manages that no message shows.
MANAGED = {"tenant_id", "version"}


@pytest.mark.parametrize(("message", "table"), BUILT_IN, ids=lambda x: getattr(x, "name", ""))
def test_every_declared_field_is_a_column_and_every_column_a_field(message: Any, table) -> None:
    descriptor: Any = message.DESCRIPTOR
    spec = resource_spec(descriptor)
    assert spec.table == table.name
    declared = {f.name for f in spec.fields} | (set(STANDARD_FIELDS) - {"etag"})
    assert declared == set(table.c.keys()) - MANAGED


@pytest.mark.parametrize(("message", "table"), BUILT_IN, ids=lambda x: getattr(x, "name", ""))
def test_what_a_column_cannot_hold_is_not_declared_optional(message: Any, table) -> None:
    descriptor: Any = message.DESCRIPTOR
    for f in resource_spec(descriptor).fields:
        if not table.c[f.name].nullable:
            # A NOT NULL column: the field is never NULL, or has a default for creates.
            assert not f.nullable or f.default is not None, f.name


def test_a_unique_field_names_the_index_its_errors_are_told_by() -> None:
    from repositories.users import USER

    assert USER.unique_fields == {
        "uq_users_tenant_email": "email",
        "uq_users_tenant_username": "username",
    }
    index_names = {index.name for index in tables.users.indexes}
    assert set(USER.unique_fields) <= index_names
