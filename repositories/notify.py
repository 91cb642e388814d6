"""The schema says what changed: PostgreSQL triggers that announce every committed write.

Each entity table gets statement-level AFTER UPDATE and AFTER DELETE triggers (with
transition tables, which PostgreSQL allows only on single-event triggers, hence one
per event) and an AFTER TRUNCATE one, all calling one function that sends a
notification on CHANNEL. NOTIFY is transactional: it is delivered when, and only
when, the write commits, whoever wrote it (any Repogate process, a tool, a process
that died right after its commit).

Inserts are not announced: a row that did not exist cannot be in any cache (a Get
of a missing row caches nothing, and a deleted row's tombstone outranks any fill),
and PostgreSQL serialises the commits of transactions that notified, so every
CreateUser would pay for an announcement nobody needs. An upsert's updated rows
reach the UPDATE trigger.

A payload is JSON, at most PAYLOAD_LIMIT bytes as PostgreSQL requires:
- `{"t": table, "r": [[tenant, id, version], ...]}`: the rows a statement changed,
  each with its version now (null: deleted for good);
- `{"t": table, "n": [tenant, ...]}`: the rows did not fit; these tenants' rows of
  the table changed;
- `{"t": table}`: not even the tenants fitted (or the table was truncated): any row
  of the table may have changed.

`parse` reads a payload back into the Changes that caches forget. A statement that
changed no row sends nothing: PostgreSQL serialises the commits of transactions
that notified, so a write that notifies costs more (see docs/caching.md).

Tables created later (entities declared from protobuf) call `create_triggers` in
their migration, so every entity table announces its writes the same way.
"""

from __future__ import annotations

import json
import uuid

from repositories.changes import Changes

CHANNEL = "repogate_changes"
# PostgreSQL refuses a payload of 8000 bytes or more.
PAYLOAD_LIMIT = 7999
FUNCTION = "repogate_notify_changes"
# Each event's trigger, with the transition table its branch of the function reads.
_EVENTS = {
    "update": " REFERENCING NEW TABLE AS new_rows",
    "delete": " REFERENCING OLD TABLE AS old_rows",
    "truncate": "",
}

CREATE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed bigint := 0;
    rows json;
    tenants json;
    payload text;
BEGIN
    -- Each branch names only the transition table its trigger declares.
    IF TG_OP = 'DELETE' THEN
        SELECT count(*), json_agg(json_build_array(tenant_id, id, NULL)),
               json_agg(DISTINCT tenant_id)
          INTO changed, rows, tenants FROM old_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT count(*), json_agg(json_build_array(tenant_id, id, version)),
               json_agg(DISTINCT tenant_id)
          INTO changed, rows, tenants FROM new_rows;
    END IF;
    IF TG_OP <> 'TRUNCATE' THEN
        IF changed = 0 THEN
            RETURN NULL;
        END IF;
        payload := json_build_object('t', TG_TABLE_NAME, 'r', rows)::text;
        IF octet_length(payload) > {PAYLOAD_LIMIT} THEN
            payload := json_build_object('t', TG_TABLE_NAME, 'n', tenants)::text;
        END IF;
    END IF;
    IF payload IS NULL OR octet_length(payload) > {PAYLOAD_LIMIT} THEN
        payload := json_build_object('t', TG_TABLE_NAME)::text;
    END IF;
    PERFORM pg_notify('{CHANNEL}', payload);
    RETURN NULL;
END
$$
"""
DROP_FUNCTION = f"DROP FUNCTION IF EXISTS {FUNCTION}()"


def trigger_name(table: str, event: str) -> str:
    return f"{table}_changes_{event}"


def create_triggers(table: str) -> list[str]:
    """The DDL that makes `table` (with tenant_id, id and version columns) announce its
    writes; CREATE_FUNCTION must have run first."""
    return [
        f"CREATE TRIGGER {trigger_name(table, event)} AFTER {event.upper()} ON {table}"
        f"{referencing} FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
        for event, referencing in _EVENTS.items()
    ]


def drop_triggers(table: str) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {trigger_name(table, event)} ON {table}" for event in _EVENTS]


def parse(payload: str) -> Changes:
    """The Changes a payload announces. One that cannot be read (another version's, or
    garbage) raises ValueError: the caller must then assume anything changed."""
    try:
        message = json.loads(payload)
        table = message["t"]
        if not isinstance(table, str):
            raise TypeError("table")
        changes = Changes()
        if "r" in message:
            changes.rows = [_row(table, *row) for row in message["r"]]
        elif "n" in message:
            changes.tables = {(table, tenant) for tenant in message["n"] if isinstance(tenant, str)}
        else:
            changes.everywhere.add(table)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"unreadable change notification: {exc}") from exc
    return changes


def _row(
    table: str, tenant: str, id_: str, version: int | None
) -> tuple[str, str, uuid.UUID, int | None]:
    if not isinstance(tenant, str) or not (version is None or isinstance(version, int)):
        raise TypeError("row")
    return table, tenant, uuid.UUID(id_), version
