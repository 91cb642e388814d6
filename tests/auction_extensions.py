"""An extension for the suite's auction schema (tests/schemas/auctions): a bid that must
beat the current price, atomically. Loaded with REPOGATE_EXTENSIONS=tests.auction_extensions."""

from __future__ import annotations

from typing import Any

from repositories.errors import FailedPrecondition, ResourceDeleted
from schema.extensions import Api, Extensions, Handler
from schema.repository import DeclaredRepository
from server import validation

extensions = Extensions()


class BidTooLow(FailedPrecondition):
    reason = "BID_TOO_LOW"


@extensions.method("acme.auctions.v1.AuctionService/PlaceBid")
def place_bid(api: Api) -> Handler:
    auctions = api.standard("Auction")

    async def run(request: Any, context: Any) -> Any:
        api.validate(request)
        key = validation.resource_id(request.id, "id")
        values = {"current_price": request.amount, "leader": request.bidder}

        async def bid(repo: DeclaredRepository) -> Any:
            row = await repo.update_if(key, values, repo.c.current_price < request.amount)
            if row is None:
                current = await repo.get(key)  # NOT_FOUND for no such auction
                if current["delete_time"] is not None:
                    raise ResourceDeleted("auction", request.id)
                raise BidTooLow(f"a bid must beat the current price, {current['current_price']}")
            return row

        return await auctions.write_one(request, bid)

    return run
