"""The DianaBot pack (schemas/dianabot) as its tests use it: where it is, its extensions,
the users and channels most rows hang from, and the requests its recipes are made of."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from tests.declared import Client
from tests.e2e.packs.support import PACKS, call, create, mask

PACK = PACKS / "dianabot"
PACKAGE = "dianabot.v1"
EXTENSIONS = "schemas.dianabot.extensions"
# The namespace of config entry ids: an entry's id is uuid5(CONFIG_IDS, key), so that
# UpdateConfigEntry with allow_missing sets or creates it by key (the pack's README).
CONFIG_IDS = uuid.UUID("a73b85a9-89ba-53c3-9df5-58904b280778")
_telegram_ids = itertools.count(1000)


def telegram_id() -> int:
    """A Telegram id no other of this process's rows has."""
    return next(_telegram_ids)


def config_id(key: str) -> str:
    """The id of the config entry of `key`."""
    return str(uuid.uuid5(CONFIG_IDS, key))


async def bot_user(c: Client, points: int = 0, **fields: Any) -> Any:
    """A user with a fresh Telegram id and, when `points`, that balance."""
    made = await create(c, "User", telegram_id=telegram_id(), **fields)
    if points:
        made = await c("UserService/IncrementUserCounters", id=made.id, points=points)
    return made


async def balance(c: Client, user_id: str) -> int:
    """get_user_balance: the user's points."""
    return int((await c("UserService/GetUser", id=user_id)).points)


def updating(c: Client, resource: str, holder: str, **fields: Any) -> Any:
    """An Update<resource>Request changing `fields` (with id and etag, not masked)."""
    masked = [name for name in fields if name not in ("id", "etag")]
    return c.message(
        f"Update{resource}Request",
        update_mask=mask(*masked),
        **{holder: c.message(resource, **fields)},
    )


def creating(c: Client, resource: str, holder: str, **fields: Any) -> Any:
    return c.message(f"Create{resource}Request", **{holder: c.message(resource, **fields)})


def add_points(c: Client, user_id: str, amount: int, source: str) -> list[Any]:
    """The add_points recipe: the balance and its ledger line, as two Transact calls."""
    line = c.message("PointTransaction", user_id=user_id, amount=amount, source=source)
    return [
        call(
            c,
            "UserService/IncrementUserCounters",
            c.message("IncrementUserCountersRequest", id=user_id, points=amount),
        ),
        call(
            c,
            "PointTransactionService/CreatePointTransaction",
            c.message("CreatePointTransactionRequest", point_transaction=line),
        ),
    ]


async def channel(c: Client, **fields: Any) -> Any:
    return await create(c, "Channel", telegram_chat_id=telegram_id(), title="ch", **fields)
