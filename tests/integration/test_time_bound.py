"""repositories.time_bound on SQLite and PostgreSQL: a statement still running at its
deadline is stopped in the database (PostgreSQL cancels it; SQLite is interrupted, where
a cancelled task would leave it running in the driver's thread), and the connection
serves the next unit of work."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, true

from repositories.database import Database
from repositories.tables import users
from repositories.time_bound import OutOfTime, execute
from repositories.users import UserRepository
from tests.integration.support import user

pytestmark = pytest.mark.integration


async def test_a_statement_running_at_its_deadline_is_stopped(
    database: Database, tenant: str
) -> None:
    async with database.unit_of_work(tenant) as uow:
        await uow.repository(UserRepository).create_many([user(f"u{i}") for i in range(1000)])
        await uow.commit()
    # A billion rows: minutes of work, unless stopped.
    a, b = users.alias("a"), users.alias("b")
    mine = (a.c.tenant_id == tenant) & (b.c.tenant_id == tenant)
    joined = users.join(a, true()).join(b, true())

    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        endless = repo.scope.select(func.count()).select_from(joined).where(mine)
        deadline = asyncio.get_running_loop().time() + 0.3
        with pytest.raises(OutOfTime) as stopped:
            await execute(repo, endless, deadline)

    if database.dialect == "sqlite":
        # Stopped by the interrupt, not left to run on.
        cause = stopped.value.__cause__
        assert isinstance(cause, sa_exc.OperationalError)
        assert "interrupted" in str(cause.orig)
    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        counted = await execute(repo, repo.scope.select(func.count()), None)
        assert counted.scalar_one() == 1000


async def test_a_deadline_already_passed_runs_nothing(database: Database, tenant: str) -> None:
    async with database.unit_of_work(tenant) as uow:
        repo = uow.repository(UserRepository)
        passed = asyncio.get_running_loop().time()
        with pytest.raises(OutOfTime):
            await execute(repo, repo.scope.select(func.count()), passed)
        assert not repo.failed  # nothing reached the database
