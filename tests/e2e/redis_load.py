"""Entity calls under load while a Redis failover happens: each worker renames its own
user and reads it back at once, so a stale cached answer shows as a wrong name."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from repogate.v1 import user_pb2
from tests.e2e.support import Dedicated, create, get
from tests.polling import eventually
from tests.rpc import md


@dataclass
class Load:
    """What the workers did: calls made, and the ones that failed or read stale."""

    calls: int = 0
    failures: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    last: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (tenant, name)


async def users(app: Dedicated, tenants: list[str]) -> list[tuple[str, str]]:
    """One user per tenant, read once so that each is cached: (tenant, id)."""
    made = []
    for i, tenant in enumerate(tenants):
        user = await create(app.users, tenant, username=f"u{i}", display_name="start")
        await get(app.users, tenant, user.id)
        made.append((tenant, user.id))
    return made


async def run(
    app: Dedicated, who: list[tuple[str, str]], drive: Callable[[Load], Awaitable[None]]
) -> Load:
    """Renames and reads back every user, concurrently, until `drive(load)` returns."""
    load = Load()
    done = asyncio.Event()

    async def driver() -> None:
        try:
            await drive(load)
        finally:
            done.set()

    async def worker(tenant: str, id_: str) -> None:
        turn = 0
        while not done.is_set():
            turn += 1
            name = f"n{turn}"
            try:
                request = user_pb2.UpdateUserRequest(user=user_pb2.User(id=id_, display_name=name))
                await app.users.UpdateUser(request, metadata=md(tenant), timeout=30)
                load.last[id_] = (tenant, name)
                # A few reads: the first fills the cache, the next ones are hits.
                for _ in range(3):
                    seen = await get(app.users, tenant, id_)
                    load.calls += 1
                    if seen.display_name != name:
                        load.stale.append(f"{id_}: {seen.display_name!r}, wrote {name!r}")
            except Exception as exc:  # every entity call must succeed
                load.failures.append(f"{type(exc).__name__}: {exc}")
            load.calls += 1
            await asyncio.sleep(0)

    await asyncio.gather(driver(), *(worker(tenant, id_) for tenant, id_ in who))
    return load


async def calls_reach(load: Load, count: int, within: float = 120) -> None:
    """Waits until the workers have made `count` calls in all."""
    await eventually(lambda: load.calls >= count, f"{count} calls", within=within)
