"""The DotMac toolkit's generic repository (schemas/dotmac), end to end on SQLite and
PostgreSQL: each method of its BaseRepository/BaseTenantRepository, each filter operator
and its transactions, answered over gRPC for the example model as
schemas/dotmac/README.md maps them."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool

from repogate.v1 import admin_pb2, admin_pb2_grpc
from schema.loading import load
from tests.conftest import Running
from tests.declared import Client
from tests.e2e.packs.support import PACKS, begin, commit, listed, mask, rollback
from tests.e2e.support import fails

pytestmark = pytest.mark.e2e

PACK = PACKS / "dotmac"  # what the pack_server fixture serves
PACKAGE = "dotmac.v1"
NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT
COUNT_MODE_EXACT, COUNT_MODE_ESTIMATED = 2, 3


def status(name: str) -> int:
    """A CustomerStatus number by its short name ("SUSPENDED")."""
    load(PACK)
    found = descriptor_pool.Default().FindEnumTypeByName(f"{PACKAGE}.CustomerStatus")
    return int(found.values_by_name[f"CUSTOMER_STATUS_{name}"].number)


ACTIVE, SUSPENDED, CLOSED = status("ACTIVE"), status("SUSPENDED"), status("CLOSED")

# name, email, status, is_active, role, category, bandwidth
PEOPLE = [
    ("John Doe", "john@example.com", ACTIVE, True, "admin", "business", 500),
    ("Jane Doe", "jane@example.com", ACTIVE, True, "user", "home", 100),
    ("Johnny Cash", "cash@example.com", SUSPENDED, False, "user", "home", 50),
    ("Ann Johnson", "ann@example.org", CLOSED, False, "user", "business", 1000),
    ("Bob Stone", "bob@example.org", ACTIVE, True, "support", "wholesale", 250),
]


def customer_message(c: Client, person: tuple[Any, ...]) -> Any:
    name, email, state, active, role, category, bandwidth = person
    return c.message(
        "Customer",
        name=name,
        email=email,
        status=state,
        is_active=active,
        role=role,
        category=category,
        bandwidth_mbps=bandwidth,
    )


async def people(c: Client) -> list[Any]:
    """PEOPLE as customers of the client's tenant, in create order."""
    return [
        await c("CustomerService/CreateCustomer", customer=customer_message(c, p)) for p in PEOPLE
    ]


async def test_create_records_who_created(client: Client) -> None:
    created = await client.as_actor("admin-7")(
        "CustomerService/CreateCustomer",
        customer=client.message("Customer", name="John Doe", email="john@example.com"),
    )

    assert (created.name, created.email) == ("John Doe", "john@example.com")
    assert (created.status, created.is_active) == (ACTIVE, True)
    assert (created.created_by, created.updated_by) == ("admin-7", "admin-7")
    again = client.message("Customer", name="Other", email="JOHN@example.com")
    error = await fails(client("CustomerService/CreateCustomer", customer=again))
    assert (error.code, error.metadata.get("field")) == (grpc.StatusCode.ALREADY_EXISTS, "email")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"email": "a@example.com"}, "customer.name"),
        ({"name": "A"}, "customer.email"),
        ({"name": "A", "email": "not an email"}, "customer.email"),
        ({"name": "A", "email": "a@example.com", "bandwidth_mbps": -1}, "customer.bandwidth_mbps"),
    ],
)
async def test_create_refuses_bad_input(client: Client, fields: dict[str, Any], field: str) -> None:
    error = await fails(
        client("CustomerService/CreateCustomer", customer=client.message("Customer", **fields))
    )

    assert (error.code, list(error.violations)) == (INVALID, [field])
    assert (await client("CustomerService/CountCustomers")).total_size == 0


async def test_get_by_id_with_and_without_deleted(client: Client) -> None:
    live = await people(client)
    gone = await client("CustomerService/DeleteCustomer", id=live[1].id)

    assert await client("CustomerService/GetCustomer", id=live[0].id) == live[0]
    # include_deleted=True: Get answers a soft-deleted row, with its delete_time.
    got = await client("CustomerService/GetCustomer", id=gone.id)
    assert got.HasField("delete_time")
    # include_deleted=False: List hides it unless show_deleted.
    by_id = f'id = "{gone.id}"'
    assert await listed(client, "Customer", filter=by_id) == []
    assert [c.id for c in await listed(client, "Customer", filter=by_id, show_deleted=True)] == [
        gone.id
    ]
    theirs = client.as_tenant(client.tenant + "-other")
    assert (await fails(theirs("CustomerService/GetCustomer", id=live[0].id))).code == NOT_FOUND


async def test_update_records_who_updated(client: Client) -> None:
    created = (await people(client))[0]
    change = client.message("Customer", id=created.id, category="enterprise", role="owner")

    updated = await client.as_actor("support-2")(
        "CustomerService/UpdateCustomer", customer=change, update_mask=mask("category")
    )

    assert (updated.category, updated.role) == ("enterprise", created.role)
    assert (updated.created_by, updated.updated_by) == ("", "support-2")
    stale = client.message("Customer", id=created.id, category="x", etag=created.etag)
    error = await fails(
        client("CustomerService/UpdateCustomer", customer=stale, update_mask=mask("category"))
    )
    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")


@pytest.mark.parametrize("soft_delete", [True, False])
async def test_delete_soft_or_for_good(client: Client, soft_delete: bool) -> None:
    created = await people(client)

    deleted = await client(
        "CustomerService/DeleteCustomer", id=created[0].id, force=not soft_delete
    )

    assert [c.id for c in await listed(client, "Customer")] == [c.id for c in created[1:]]
    if soft_delete:
        assert deleted.HasField("delete_time")
        restored = await client("CustomerService/UndeleteCustomer", id=created[0].id)
        assert not restored.HasField("delete_time")
    else:
        error = await fails(client("CustomerService/GetCustomer", id=created[0].id))
        assert error.code == NOT_FOUND


def _has(text: str) -> Callable[[Any], bool]:
    return lambda c: text.lower() in c.name.lower()


OPERATORS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "EQ": ('status = "active"', lambda c: c.status == ACTIVE),
    "NE": ('role != "user"', lambda c: c.role != "user"),
    "GT": ("bandwidth_mbps > 250", lambda c: c.bandwidth_mbps > 250),
    "GTE": ("bandwidth_mbps >= 250", lambda c: c.bandwidth_mbps >= 250),
    "LT": ("bandwidth_mbps < 250", lambda c: c.bandwidth_mbps < 250),
    "LTE": ("bandwidth_mbps <= 250", lambda c: c.bandwidth_mbps <= 250),
    "IN": ('category IN ("home", "wholesale")', lambda c: c.category in ("home", "wholesale")),
    "NOT_IN": (
        'NOT category IN ("home", "wholesale")',
        lambda c: c.category not in ("home", "wholesale"),
    ),
    "LIKE": ('name = "John*"', lambda c: c.name.startswith("John")),
    "ILIKE": ('name =~ "*john*"', _has("john")),
    "BOOL": ("is_active = true", lambda c: c.is_active),
    "AND": (
        'is_active = true AND category = "business"',
        lambda c: c.is_active and c.category == "business",
    ),
    "search": (
        'name =~ "*doe*" OR email =~ "*DOE*"',
        lambda c: "doe" in f"{c.name} {c.email}".lower(),
    ),
}


async def test_list_with_every_filter_operator(client: Client) -> None:
    created = await people(client)

    for operator, (text, wanted) in OPERATORS.items():
        expected = [c.id for c in created if wanted(c)]
        assert expected, operator  # each case selects someone ...
        assert len(expected) < len(created), operator  # ... and not everyone
        assert [c.id for c in await listed(client, "Customer", filter=text)] == expected, operator
        count = await client("CustomerService/CountCustomers", filter=text)
        assert count.total_size == len(expected), operator


async def test_list_with_a_date_range(client: Client) -> None:
    created = await people(client)
    since = created[2].create_time.ToJsonString()

    found = await listed(client, "Customer", filter=f'create_time >= "{since}"')

    assert [c.id for c in found] == [c.id for c in created[2:]]


@pytest.mark.parametrize(
    ("order_by", "key", "reverse"),
    [
        ("name", lambda c: c.name, False),
        ("name desc", lambda c: c.name, True),
        ("bandwidth_mbps desc", lambda c: c.bandwidth_mbps, True),
        ("email", lambda c: c.email, False),
    ],
)
async def test_list_with_sorts(
    client: Client, order_by: str, key: Callable[[Any], Any], reverse: bool
) -> None:
    created = await people(client)

    found = await listed(client, "Customer", order_by=order_by, page_size=2)

    assert [c.id for c in found] == [c.id for c in sorted(created, key=key, reverse=reverse)]


async def test_list_refuses_an_unknown_field_or_operator(client: Client) -> None:
    for text in ('nickname = "x"', 'bandwidth_mbps = "fast"', "name ~~ 'x'"):
        error = await fails(client("CustomerService/ListCustomers", filter=text))
        assert (error.code, list(error.violations)) == (INVALID, ["filter"]), text
    error = await fails(client("CustomerService/ListCustomers", order_by="category"))
    assert (error.code, list(error.violations)) == (INVALID, ["order_by"])


@pytest.mark.parametrize("per_page", [2, 3])
async def test_list_paginated(client: Client, per_page: int) -> None:
    created = await people(client)
    pages = math.ceil(len(created) / per_page)

    for page in range(1, pages + 2):
        result = await client(
            "CustomerService/ListCustomers",
            page_size=per_page,
            skip=(page - 1) * per_page,
            count_mode=COUNT_MODE_EXACT,
        )
        expected = created[(page - 1) * per_page : page * per_page]
        assert [c.id for c in result.customers] == [c.id for c in expected], page
        assert (result.total_size, result.total_size_exact) == (len(created), True)


async def test_count_with_filters(client: Client) -> None:
    created = await people(client)

    everyone = await client("CustomerService/CountCustomers")
    active = await client("CustomerService/CountCustomers", filter="is_active = true")
    estimated = await client(
        "CustomerService/CountCustomers", filter="is_active = true", count_mode=COUNT_MODE_ESTIMATED
    )

    assert everyone.total_size == len(created)
    assert active.total_size == sum(c.is_active for c in created)
    # Below REPOGATE_COUNT_ESTIMATE_THRESHOLD the estimate is the exact count.
    assert (estimated.total_size, estimated.total_size_exact) == (active.total_size, True)


@pytest.mark.parametrize(("field", "value"), [("email", "jane@example.com"), ("role", "support")])
async def test_get_by_field(client: Client, field: str, value: str) -> None:
    created = await people(client)

    found = await client(
        "CustomerService/ListCustomers", filter=f'{field} = "{value}"', page_size=1
    )

    assert list(found.customers) == [next(c for c in created if getattr(c, field) == value)]


async def test_cursor_paginate(client: Client) -> None:
    created = await people(client)
    seen: list[str] = []
    cursor = ""
    late = None

    while True:
        page = await client(
            "CustomerService/ListCustomers", page_size=2, page_token=cursor, order_by="create_time"
        )
        seen += [c.id for c in page.customers]
        if late is None:
            # Created while the walk goes on: seen once, at its place; nothing seen twice.
            late = await client(
                "CustomerService/CreateCustomer",
                customer=client.message("Customer", name="Late", email="late@example.com"),
            )
        cursor = page.next_page_token
        if not cursor:
            break

    assert seen == [c.id for c in created] + [late.id]
    error = await fails(
        client("CustomerService/ListCustomers", page_size=2, page_token="not-a-cursor")
    )
    assert (error.code, error.reason) == (INVALID, "INVALID_PAGE_TOKEN")


async def test_tenant_isolation(client: Client) -> None:
    mine = await people(client)
    theirs = client.as_tenant(client.tenant + "-other")
    same_email = customer_message(theirs, PEOPLE[0])

    their_customer = await theirs("CustomerService/CreateCustomer", customer=same_email)

    assert [c.id for c in await listed(theirs, "Customer")] == [their_customer.id]
    assert [c.id for c in await listed(client, "Customer")] == [c.id for c in mine]
    for method, request in (
        ("CustomerService/GetCustomer", {"id": mine[0].id}),
        ("CustomerService/DeleteCustomer", {"id": mine[0].id}),
        ("CustomerService/BatchGetCustomers", {"ids": [mine[0].id]}),
    ):
        assert (await fails(theirs(method, **request))).code == NOT_FOUND, method
    profile = theirs.message("Profile", customer_id=mine[0].id, bio="x")
    error = await fails(theirs("ProfileService/CreateProfile", profile=profile))
    assert error.code == NOT_FOUND


@pytest.mark.parametrize("committed", [True, False])
async def test_customer_and_profile_in_one_transaction(client: Client, committed: bool) -> None:
    began = await begin(client)
    inside = client.inside(began)

    customer = await inside(
        "CustomerService/CreateCustomer", customer=customer_message(client, PEOPLE[0])
    )
    profile = inside.message("Profile", customer_id=customer.id, bio="Likes fibre.")
    await inside("ProfileService/CreateProfile", profile=profile)
    duplicate = customer_message(client, PEOPLE[0])
    failed = await fails(inside("CustomerService/CreateCustomer", customer=duplicate))
    await (commit if committed else rollback)(client, began)

    # The failed call undid only itself: the transaction went on.
    assert failed.code == grpc.StatusCode.ALREADY_EXISTS
    expected = 1 if committed else 0
    assert (await client("CustomerService/CountCustomers")).total_size == expected
    assert (await client("ProfileService/CountProfiles")).total_size == expected


async def test_purging_a_customer_purges_its_profile(client: Client) -> None:
    doomed, kept = (await people(client))[:2]
    for c in (doomed, kept):
        await client(
            "ProfileService/CreateProfile", profile=client.message("Profile", customer_id=c.id)
        )

    await client("CustomerService/DeleteCustomer", id=doomed.id, force=True)

    left = [item async for item in client.walk("ProfileService/ListProfiles", "profiles")]
    assert [p.customer_id for p in left] == [kept.id]


async def test_health_check(pack_server: Running) -> None:
    admin = admin_pb2_grpc.AdminServiceStub(pack_server.channel)

    report = await admin.CheckHealth(admin_pb2.CheckHealthRequest())

    database = next(d for d in report.dependencies if d.name == "database")
    assert database.reachable
    assert report.status == admin_pb2.HEALTH_STATUS_HEALTHY


async def test_a_random_id_is_not_found_and_a_malformed_one_invalid(client: Client) -> None:
    assert (
        await fails(client("CustomerService/GetCustomer", id=str(uuid.uuid4())))
    ).code == NOT_FOUND
    error = await fails(client("CustomerService/GetCustomer", id="42"))
    assert (error.code, list(error.violations)) == (INVALID, ["id"])
