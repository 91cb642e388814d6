"""The operation and table a statement's span and histogram series are named by, and the
peer a call's span names."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from server.call_spans import peer_attributes
from server.db_semconv import database_attributes, span_name, summary


@pytest.mark.parametrize(
    ("statement", "operation", "table"),
    [
        ("SELECT users.id, users.email \nFROM users \nWHERE users.id = $1", "SELECT", "users"),
        ('SELECT "user".id FROM "user" WHERE true', "SELECT", "user"),
        ("select count(*) from (SELECT 1 FROM jobs) AS anon_1", "SELECT", "jobs"),
        ("INSERT INTO sessions (id, tenant_id) VALUES ($1, $2)", "INSERT", "sessions"),
        ("UPDATE messages SET body=$1 WHERE messages.id = $2", "UPDATE", "messages"),
        ("DELETE FROM public.request_ids WHERE expires_at < $1", "DELETE", "public.request_ids"),
        ("WITH moved AS (DELETE FROM jobs RETURNING id) SELECT 1", "WITH", "jobs"),
        ("SELECT 1", "SELECT", None),
        ("BEGIN", "BEGIN", None),
        ("", "", None),
    ],
)
def test_a_statement_is_summed_up_by_operation_and_first_table(
    statement: str, operation: str, table: str | None
) -> None:
    assert summary(statement) == (operation, table)


def test_a_span_is_named_operation_then_table() -> None:
    assert span_name("SELECT", "users") == "SELECT users"
    assert span_name("BEGIN", None) == "BEGIN"


def test_the_database_and_its_server_are_named_without_credentials() -> None:
    url = make_url("postgresql+asyncpg://app:secret@db.internal/repogate")

    assert dict(database_attributes("postgresql", url)) == {
        "db.system": "postgresql",
        "db.namespace": "repogate",
        "db.name": "repogate",
        "server.address": "db.internal",
        "server.port": 5432,
    }
    assert dict(database_attributes("sqlite", make_url("sqlite+aiosqlite:///r.db"))) == {
        "db.system": "sqlite",
        "db.namespace": "r.db",
        "db.name": "r.db",
    }


@pytest.mark.parametrize(
    ("peer", "attributes"),
    [
        ("ipv4:10.0.0.7:52144", {"network.peer.address": "10.0.0.7", "network.peer.port": 52144}),
        ("ipv6:[::1]:52144", {"network.peer.address": "::1", "network.peer.port": 52144}),
        ("unix:/run/app.sock", {"network.peer.address": "/run/app.sock"}),
        ("unix:", {}),
    ],
)
def test_the_peer_is_read_from_grpcs_peer_string(
    peer: str, attributes: dict[str, str | int]
) -> None:
    assert dict(peer_attributes(peer)) == attributes
