"""The DianaBot pack (schemas/dianabot) as its tests use it: where it is, its extensions,
and the users most rows hang from."""

from __future__ import annotations

import itertools
from typing import Any

from tests.declared import Client
from tests.e2e.packs.support import PACKS, create

PACK = PACKS / "dianabot"
PACKAGE = "dianabot.v1"
EXTENSIONS = "schemas.dianabot.extensions"
_telegram_ids = itertools.count(1000)


def telegram_id() -> int:
    """A Telegram id no other of this process's rows has."""
    return next(_telegram_ids)


async def bot_user(c: Client, points: int = 0, **fields: Any) -> Any:
    """A user with a fresh Telegram id and, when `points`, that balance."""
    made = await create(c, "User", telegram_id=telegram_id(), **fields)
    if points:
        made = await c("UserService/IncrementUserCounters", id=made.id, points=points)
    return made


async def balance(c: Client, user_id: str) -> int:
    """get_user_balance: the user's points."""
    return int((await c("UserService/GetUser", id=user_id)).points)
