"""The DianaBot pack (schemas/dianabot, seed 004) end to end, on SQLite and PostgreSQL:
a configuration value set or created by key in one call (UpdateConfigEntry with
allow_missing, the id derived from the key), and a user's balance read alone (GetUser
with a read_mask), as schemas/dianabot/README.md maps them."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from tests.conftest import Running
from tests.declared import Client
from tests.e2e.packs import diana
from tests.e2e.packs.diana import PACKAGE, bot_user, config_id
from tests.e2e.packs.support import counted, create, listed, mask, struct
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

PACK, EXTENSIONS = diana.PACK, diana.EXTENSIONS  # what the pack_server fixture serves
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def c(pack_server: Running) -> Client:
    """A client of a tenant of the test's own."""
    return Client(pack_server.channel, schema=PACK, package=PACKAGE)


def setting(c: Client, key: str, value: Any, *paths: str, **fields: Any) -> Any:
    """The set-or-create request of `key`: UpdateConfigEntryRequest with allow_missing."""
    entry = c.message(
        "ConfigEntry", id=config_id(key), key=key, value=struct(value=value), **fields
    )
    return c.message(
        "UpdateConfigEntryRequest",
        config_entry=entry,
        update_mask=mask(*(paths or ("value",))),
        allow_missing=True,
    )


async def set_value(c: Client, key: str, value: Any, *paths: str, **fields: Any) -> Any:
    return await c("ConfigEntryService/UpdateConfigEntry", setting(c, key, value, *paths, **fields))


# ---------------------------------------------------------------- set-or-create by key


async def test_set_creates_the_entry_then_updates_it_through_the_same_call(c: Client) -> None:
    created = await set_value(c, "daily_gift", 10, description="points a day")
    updated = await set_value(c, "daily_gift", 25, description="not in the mask: kept")
    other = await set_value(c, "max_bids", 3)

    assert (created.id, created.etag, created.value["value"]) == (config_id("daily_gift"), "1", 10)
    assert (updated.id, updated.etag, updated.value["value"]) == (created.id, "2", 25)
    assert updated.description == "points a day"
    (found,) = await listed(c, "ConfigEntry", filter='key = "daily_gift"')  # get a value
    assert found == updated
    assert other.id == config_id("max_bids") != created.id
    assert await counted(c, "ConfigEntry", "") == 2


async def test_set_of_several_keys_in_one_batch_is_all_or_nothing(c: Client) -> None:
    kept = await set_value(c, "daily_gift", 10)
    batch = [setting(c, "daily_gift", 20), setting(c, "max_bids", 3)]

    answer = await c("ConfigEntryService/BatchUpdateConfigEntries", requests=batch)
    bad = [setting(c, "daily_gift", 30), setting(c, "x" * 129, 1)]  # a key too long
    error = await fails(c("ConfigEntryService/BatchUpdateConfigEntries", requests=bad))

    assert [(e.key, e.value["value"]) for e in answer.config_entries] == [
        ("daily_gift", 20),
        ("max_bids", 3),
    ]
    assert answer.config_entries[0].id == kept.id
    assert error.code == INVALID
    assert list(error.violations) == ["requests[1].config_entry.key"]
    values = {e.key: e.value["value"] for e in await listed(c, "ConfigEntry")}
    assert values == {"daily_gift": 20, "max_bids": 3}


async def test_the_same_key_in_another_tenant_is_its_own_entry(c: Client) -> None:
    theirs = c.as_tenant(f"t-{uuid.uuid4().hex[:16]}")
    mine = await set_value(c, "daily_gift", 10)

    other = await set_value(theirs, "daily_gift", 99)
    again = await set_value(c, "daily_gift", 11)

    assert other.id == mine.id  # the same key, so the same id: each tenant its own row
    assert (other.etag, other.value["value"]) == ("1", 99)
    assert (again.etag, again.value["value"]) == ("2", 11)
    got = await theirs("ConfigEntryService/GetConfigEntry", id=mine.id)
    assert got.value["value"] == 99


async def test_set_of_a_key_created_with_a_server_id_is_already_exists(c: Client) -> None:
    """CreateConfigEntry gives the entry a random id: its key is taken, and set-or-create,
    which looks for the key's derived id, creates nothing over it."""
    made = await create(c, "ConfigEntry", key="daily_gift", value=struct(value=10))

    error = await fails(set_value(c, "daily_gift", 25))

    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert await listed(c, "ConfigEntry") == [made]


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"key": ""}, INVALID, "config_entry.key"),  # a create needs the key
        ({"id": "daily_gift"}, INVALID, "config_entry.id"),  # the key, not its uuid5
        ({"paths": ("key",)}, INVALID, "update_mask"),  # immutable
        ({"paths": ("value", "value.value")}, INVALID, "update_mask"),
        ({"etag": "3"}, grpc.StatusCode.NOT_FOUND, None),  # no version of a missing row
    ],
)
async def test_a_bad_set_changes_nothing(
    c: Client, change: dict[str, Any], code: grpc.StatusCode, field: str | None
) -> None:
    kept = await set_value(c, "max_bids", 3)
    request = setting(c, "daily_gift", 25, *change.get("paths", ()))
    for name, value in change.items():
        if name != "paths":
            setattr(request.config_entry, name, value)

    error = await fails(c("ConfigEntryService/UpdateConfigEntry", request))

    assert error.code == code
    assert list(error.violations) == ([field] if field else [])
    assert await listed(c, "ConfigEntry") == [kept]


async def test_set_of_a_deleted_entry_is_refused_until_undeleted(c: Client) -> None:
    made = await set_value(c, "daily_gift", 10)
    await c("ConfigEntryService/DeleteConfigEntry", id=made.id)

    error = await fails(set_value(c, "daily_gift", 25))
    await c("ConfigEntryService/UndeleteConfigEntry", id=made.id)
    after = await set_value(c, "daily_gift", 25)

    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RESOURCE_DELETED")
    assert after.value["value"] == 25


# ---------------------------------------------------------------- a balance alone


async def test_get_user_balance_reads_the_points_alone(c: Client) -> None:
    made = await bot_user(c, points=120, username="ann", first_name="Ann")

    balance = await c("UserService/GetUser", id=made.id, read_mask=mask("points"))
    whole = await c("UserService/GetUser", id=made.id)

    assert balance == c.message("User", points=made.points)
    assert balance.points == 120
    assert whole == made  # a whole read after a masked one is whole
    theirs = c.as_tenant(f"t-{uuid.uuid4().hex[:16]}")
    error = await fails(theirs("UserService/GetUser", id=made.id, read_mask=mask("points")))
    assert error.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("paths", [("balance",), ("points.value",), ("*", "points")])
async def test_a_bad_read_mask_is_refused(c: Client, paths: tuple[str, ...]) -> None:
    made = await bot_user(c, points=5)

    error = await fails(c("UserService/GetUser", id=made.id, read_mask=mask(*paths)))

    assert (error.code, list(error.violations)) == (INVALID, ["read_mask"])
