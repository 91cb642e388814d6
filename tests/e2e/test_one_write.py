"""Single-row standard writes outside a transaction run their one statement in
autocommit on PostgreSQL; writes of more than one statement keep their transaction."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from repogate.v1 import user_pb2
from tests.e2e.domain import Stubs, new_session, new_user
from tests.e2e.support import StartRepogate
from tests.rpc import md

pytestmark = pytest.mark.e2e


async def test_one_statement_writes_skip_begin_and_commit(
    postgresql_url: str, start_repogate: StartRepogate, tenant: str
) -> None:
    app = await start_repogate(database_url=postgresql_url, purge_interval=0)
    assert app.app.units is not None
    engine = app.app.units._db.engine  # type: ignore[attr-defined]
    # (first word of each statement, whether the server held a transaction open after it)
    seen: list[tuple[str, bool]] = []

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        driver = conn.connection.driver_connection
        seen.append((statement.split(None, 1)[0].upper(), driver.is_in_transaction()))

    s = Stubs.on(app.channel)
    event.listen(engine.sync_engine, "after_cursor_execute", after)
    try:
        ann = await new_user(s, tenant)
        created = list(seen)
        seen.clear()
        ann.display_name = "Ann"
        await s.users.UpdateUser(user_pb2.UpdateUserRequest(user=ann), metadata=md(tenant))
        updated = list(seen)
        seen.clear()
        # A session locks its user, then inserts: two statements, one transaction.
        await new_session(s, tenant, ann.id)
        session = list(seen)
    finally:
        event.remove(engine.sync_engine, "after_cursor_execute", after)

    assert created == [("INSERT", False)]
    assert updated == [("UPDATE", False)]
    assert [in_transaction for _, in_transaction in session] == [True, True]
    assert [word for word, _ in session] == ["SELECT", "INSERT"]
