"""Deadlines bound the database work: a call that outlives its deadline, or the
server's statement timeout when it set none, is cancelled with its statement,
and its connection comes back. PostgreSQL: a row lock makes a statement wait."""

from __future__ import annotations

import grpc
import pytest

from repogate.v1 import transaction_pb2 as pb
from repogate.v1 import user_pb2
from tests.e2e.support import Dedicated, StartRepogate, create, eventually, fails, get, in_use
from tests.e2e.test_transactions import TxStub, begin, commit, inside
from tests.rpc import md

pytestmark = pytest.mark.e2e


def rename(id_: str, name: str) -> user_pb2.UpdateUserRequest:
    return user_pb2.UpdateUserRequest(user=user_pb2.User(id=id_, display_name=name))


async def lock_a_user(app: Dedicated, tenant: str) -> tuple[pb.Transaction, user_pb2.User]:
    """A transaction holding the row lock of a new user, and the user."""
    ann = await create(app.users, tenant, username="ann")
    holder = await begin(TxStub(app.channel), tenant)
    await app.users.UpdateUser(rename(ann.id, "holder"), metadata=inside(tenant, holder))
    return holder, ann


async def test_a_call_without_a_deadline_is_bounded_by_the_statement_timeout(
    postgresql_url: str, start_repogate: StartRepogate, tenant: str
) -> None:
    app = await start_repogate(
        database_url=postgresql_url, db_pool_size=4, purge_interval=0, db_statement_timeout=0.3
    )
    holder, ann = await lock_a_user(app, tenant)

    error = await fails(app.users.UpdateUser(rename(ann.id, "waiter"), metadata=md(tenant)))
    await eventually(lambda: in_use(app) == 1)  # only the holder's
    await commit(TxStub(app.channel), tenant, holder)

    assert (error.code, error.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "STATEMENT_TIMEOUT")
    assert (await get(app.users, tenant, ann.id)).display_name == "holder"
    assert app.app.breakers["database"].state.value == "CLOSED"


async def test_a_deadline_passing_mid_statement_cancels_it_and_frees_the_connection(
    postgresql_url: str, start_repogate: StartRepogate, tenant: str
) -> None:
    app = await start_repogate(database_url=postgresql_url, db_pool_size=4, purge_interval=0)
    holder, ann = await lock_a_user(app, tenant)

    with pytest.raises(grpc.aio.AioRpcError) as late:
        await app.users.UpdateUser(rename(ann.id, "waiter"), metadata=md(tenant), timeout=0.3)
    await eventually(lambda: in_use(app) == 1)
    await commit(TxStub(app.channel), tenant, holder)

    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The cancelled UPDATE did not run once the lock was free.
    assert (await get(app.users, tenant, ann.id)).display_name == "holder"
