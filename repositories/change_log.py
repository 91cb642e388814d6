"""The schema says what changed: PostgreSQL triggers record every write in a change log,
inside the writing transaction, for every process to read (server/coherence.py).

Each entity table gets statement-level AFTER UPDATE and AFTER DELETE triggers (with
transition tables, which PostgreSQL allows only on single-event triggers, hence one
per event) and an AFTER TRUNCATE one, all calling one function that appends a row
to TABLE: the writing transaction's id and what it changed. The row commits with
the write, or not at all, whoever wrote it (any Repogate process, a tool, a process
that died right after its commit).

A payload is JSON:
- `{"t": table, "r": [[tenant, id, version], ...]}`: the rows a statement changed,
  each with its version now (null: deleted for good);
- `{"t": table, "n": [tenant, ...]}`: more than MAX_ROWS rows; these tenants' rows of
  the table changed;
- `{"t": table}`: more than MAX_ROWS tenants too, or a truncate: any row may have.

Readers poll with PostgreSQL snapshots (`since`): the rows of transactions that
committed after the previous poll's snapshot was taken and before this one's, so a
poll whose snapshot was taken at time t has seen every write committed before t.
TABLE is UNLOGGED (no WAL, no fsync): a crash empties it, and also ends every
reader's connection, after which a reader drops its cache and starts afresh.

Inserts are not recorded: a row that did not exist cannot be in any cache (a Get of
a missing row caches nothing, and a deleted row's tombstone outranks any fill). An
upsert's updated rows reach the UPDATE trigger.

Tables created later (entities declared from protobuf) call `create_triggers` in
their migration, so every entity table records its writes the same way.
"""

from __future__ import annotations

import json
import uuid

from repositories.changes import Changes

TABLE = "repogate_changes"
FUNCTION = "repogate_record_changes"
# Rows one statement may name; beyond, its tenants are named instead (and beyond
# that many tenants, the table), so that no log row grows without bound.
MAX_ROWS = 500
# Each event's trigger, with the transition table its branch of the function reads.
_EVENTS = {
    "update": " REFERENCING NEW TABLE AS new_rows",
    "delete": " REFERENCING OLD TABLE AS old_rows",
    "truncate": "",
}

CREATE_TABLE = f"""
CREATE UNLOGGED TABLE {TABLE} (
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    payload text NOT NULL
)
"""
CREATE_INDEX = f"CREATE INDEX ix_{TABLE}_xid ON {TABLE} (xid)"
CREATE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed bigint := 0;
    tenants bigint := 0;
    named text;  -- 'r': the rows are listed, 'n': their tenants, null: the table only
    listed json;
BEGIN
    -- Each branch names only the transition table its trigger declares.
    IF TG_OP = 'DELETE' THEN
        SELECT count(*), count(DISTINCT tenant_id) INTO changed, tenants FROM old_rows;
        IF changed BETWEEN 1 AND {MAX_ROWS} THEN
            named := 'r';
            SELECT json_agg(json_build_array(tenant_id, id, NULL)) INTO listed FROM old_rows;
        ELSIF tenants BETWEEN 1 AND {MAX_ROWS} THEN
            named := 'n';
            SELECT json_agg(DISTINCT tenant_id) INTO listed FROM old_rows;
        END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT count(*), count(DISTINCT tenant_id) INTO changed, tenants FROM new_rows;
        IF changed BETWEEN 1 AND {MAX_ROWS} THEN
            named := 'r';
            SELECT json_agg(json_build_array(tenant_id, id, version)) INTO listed FROM new_rows;
        ELSIF tenants BETWEEN 1 AND {MAX_ROWS} THEN
            named := 'n';
            SELECT json_agg(DISTINCT tenant_id) INTO listed FROM new_rows;
        END IF;
    END IF;
    IF TG_OP <> 'TRUNCATE' AND changed = 0 THEN
        RETURN NULL;
    END IF;
    INSERT INTO {TABLE} (payload) VALUES (CASE
        WHEN named IS NULL THEN json_build_object('t', TG_TABLE_NAME)
        ELSE json_build_object('t', TG_TABLE_NAME, named, listed)
    END::text);
    RETURN NULL;
END
$$
"""
DROP_FUNCTION = f"DROP FUNCTION IF EXISTS {FUNCTION}()"
DROP_TABLE = f"DROP TABLE IF EXISTS {TABLE}"

# The log rows of transactions that committed after snapshot $1 was taken and before
# this statement's own snapshot (returned as `taken`): those in progress when $1 was
# taken, and those that began after. One statement: one snapshot for all of it.
SINCE = f"""
SELECT pg_current_snapshot()::text AS taken,
       ARRAY(SELECT payload FROM {TABLE}
             WHERE xid >= pg_snapshot_xmax($1::text::pg_snapshot)
                OR xid = ANY(ARRAY(SELECT pg_snapshot_xip($1::text::pg_snapshot)))
             ORDER BY xid) AS payloads
"""
SNAPSHOT = "SELECT pg_current_snapshot()::text"
# Removes the rows of transactions that had ended when snapshot $1 was taken.
FORGET_BEFORE = f"DELETE FROM {TABLE} WHERE xid < pg_snapshot_xmin($1::text::pg_snapshot)"


def trigger_name(table: str, event: str) -> str:
    return f"{table}_changes_{event}"


def create_triggers(table: str) -> list[str]:
    """The DDL that makes `table` (with tenant_id, id and version columns) record its
    writes; CREATE_TABLE and CREATE_FUNCTION must have run first."""
    return [
        f"CREATE TRIGGER {trigger_name(table, event)} AFTER {event.upper()} ON {table}"
        f"{referencing} FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
        for event, referencing in _EVENTS.items()
    ]


def drop_triggers(table: str) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {trigger_name(table, event)} ON {table}" for event in _EVENTS]


def parse(payload: str) -> Changes:
    """The Changes a payload records. One that cannot be read (another version's, or
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
        raise ValueError(f"unreadable change log entry: {exc}") from exc
    return changes


def _row(
    table: str, tenant: str, id_: str, version: int | None
) -> tuple[str, str, uuid.UUID, int | None]:
    if not isinstance(tenant, str) or not (version is None or isinstance(version, int)):
        raise TypeError("row")
    return table, tenant, uuid.UUID(id_), version
