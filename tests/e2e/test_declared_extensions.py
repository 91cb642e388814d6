"""Extensions: Python behaviour registered against a schema's method by name
(REPOGATE_EXTENSIONS), run like the standard methods: tenant, errors, transactions,
request ids."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from grpc import aio

from schema.loading import load
from schema.model import SchemaError
from server.app import Repogate
from server.settings import Settings
from tests.rpc import details, md

pytestmark = pytest.mark.e2e

AUCTIONS = Path(__file__).parents[1] / "schemas" / "auctions"
SERVICE = "acme.auctions.v1.AuctionService"


@pytest.fixture
async def channel(fresh_url: str) -> AsyncIterator[aio.Channel]:
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=fresh_url,
        schema_path=str(AUCTIONS),
        extensions="tests.auction_extensions",
        shutdown_grace=1,
    )
    async with Repogate(settings) as app, aio.insecure_channel(app.address) as channel:
        yield channel


async def call(channel: aio.Channel, tenant: str, method: str, **fields: Any) -> Any:
    descriptor = descriptor_pool.Default().FindServiceByName(SERVICE).methods_by_name[method]
    request = GetMessageClass(descriptor.input_type)(**fields)
    stub = channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=type(request).SerializeToString,
        response_deserializer=GetMessageClass(descriptor.output_type).FromString,
    )
    return await stub(request, metadata=md(tenant), timeout=20)


def auction(title: str) -> Any:
    cls = GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName("acme.auctions.v1.Auction")
    )
    return cls(title=title)


async def test_concurrent_bids_leave_the_highest_and_refuse_the_lower(channel) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    made = await call(channel, tenant, "CreateAuction", auction=auction("a lamp"))
    amounts = random.Random(7).sample(range(1, 1000), 20)

    async def bid(amount: int) -> Any:
        try:
            return await call(
                channel, tenant, "PlaceBid", id=made.id, amount=amount, bidder=f"b{amount}"
            )
        except aio.AioRpcError as exc:
            return exc

    results = await asyncio.gather(*(bid(amount) for amount in amounts))

    won = [r for r in results if not isinstance(r, aio.AioRpcError)]
    refused = [r for r in results if isinstance(r, aio.AioRpcError)]
    assert won, "the first bid beats the starting price"
    assert all((r.current_price, r.leader) == (r.current_price, f"b{r.current_price}") for r in won)
    assert all(details(r).reason == "BID_TOO_LOW" for r in refused)
    assert all(r.code() == grpc.StatusCode.FAILED_PRECONDITION for r in refused)
    final = await call(channel, tenant, "GetAuction", id=made.id)
    assert (final.current_price, final.leader) == (max(amounts), f"b{max(amounts)}")
    # Each accepted bid beat every bid accepted before it: etags count them.
    assert int(final.etag) == 1 + len(won)


async def test_an_extension_checks_the_request_with_the_schema_rules(channel) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    made = await call(channel, tenant, "CreateAuction", auction=auction("a chair"))

    with pytest.raises(aio.AioRpcError) as error:
        await call(channel, tenant, "PlaceBid", id=made.id, amount=0, bidder="")

    found = details(error.value)
    assert found.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(found.violations) == {"amount", "bidder"}
    assert (await call(channel, tenant, "GetAuction", id=made.id)).current_price == 0


async def test_an_extension_keeps_tenants_apart_and_replays_request_ids(channel) -> None:
    tenant, other = f"t-{uuid.uuid4().hex[:12]}", f"t-{uuid.uuid4().hex[:12]}"
    made = await call(channel, tenant, "CreateAuction", auction=auction("a desk"))

    with pytest.raises(aio.AioRpcError) as error:
        await call(channel, other, "PlaceBid", id=made.id, amount=5, bidder="x")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND

    request_id = str(uuid.uuid4())
    first = await call(
        channel, tenant, "PlaceBid", id=made.id, amount=5, bidder="x", request_id=request_id
    )
    again = await call(
        channel, tenant, "PlaceBid", id=made.id, amount=5, bidder="x", request_id=request_id
    )
    assert again == first  # replayed, not refused as too low
    assert (await call(channel, tenant, "GetAuction", id=made.id)).etag == first.etag


async def test_a_deleted_auction_takes_no_bid(channel) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    made = await call(channel, tenant, "CreateAuction", auction=auction("a rug"))
    await call(channel, tenant, "DeleteAuction", id=made.id)

    with pytest.raises(aio.AioRpcError) as error:
        await call(channel, tenant, "PlaceBid", id=made.id, amount=5, bidder="x")

    assert details(error.value).reason == "RESOURCE_DELETED"


async def test_a_schema_method_without_an_extension_or_a_standard_shape_stops_the_start(
    tmp_path: Path,
) -> None:
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        schema_path=str(AUCTIONS),
    )
    expected = re.escape("AuctionService.PlaceBid: its name is no standard")
    with pytest.raises(SchemaError, match=expected):
        async with Repogate(settings):
            pass


def test_an_extension_for_a_method_the_schema_lacks_is_refused() -> None:
    from schema.declared import declare
    from schema.extensions import load as load_extensions
    from schema.shapes import bind

    declared = declare(load(AUCTIONS))
    found = load_extensions(["tests.auction_extensions"])
    bind(declared, found)  # every extension names a method of the schema
    found["acme.auctions.v1.AuctionService/Nothing"] = found[f"{SERVICE}/PlaceBid"]

    expected = re.escape("extension acme.auctions.v1.AuctionService/Nothing")
    with pytest.raises(SchemaError, match=expected):
        bind(declared, found)
