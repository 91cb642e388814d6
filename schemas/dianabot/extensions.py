"""DianaBot's two writes that no standard method gives: a point transfer that must not
overdraw the sender, and an auction bid that must beat the current price. Each is one
unit of work: its checks and writes commit together or not at all, and a losing race is
refused, never half applied.

Served with REPOGATE_SCHEMA=schemas/dianabot REPOGATE_EXTENSIONS=schemas/dianabot/extensions.py
(from the repository's root).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from sqlalchemy import or_

from repositories.base import Row
from repositories.errors import FailedPrecondition, InvalidArgument, ResourceDeleted
from schema.extensions import Api, Extensions, Handler
from schema.repository import DeclaredRepository
from server import validation

extensions = Extensions()
PACKAGE = "dianabot.v1"


class InsufficientPoints(FailedPrecondition):
    reason = "INSUFFICIENT_POINTS"


class BidTooLow(FailedPrecondition):
    reason = "BID_TOO_LOW"


class AuctionNotOpen(FailedPrecondition):
    reason = "AUCTION_NOT_OPEN"


def _referred(repo: DeclaredRepository, field: str) -> DeclaredRepository:
    """The repository of the resource `field` of `repo`'s resource refers to, in its unit."""
    return repo.sibling(type(repo).references[field])


@extensions.method(f"{PACKAGE}.PointTransactionService/TransferPoints")
def transfer_points(api: Api) -> Handler:
    ledger = api.standard("PointTransaction")
    response = GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(f"{PACKAGE}.TransferPointsResponse")
    )

    async def run(request: Any, context: Any) -> Any:
        api.validate(request)
        sender = validation.resource_id(request.from_user_id, "from_user_id")
        receiver = validation.resource_id(request.to_user_id, "to_user_id")
        if sender == receiver:
            raise InvalidArgument.field("to_user_id", "must differ from from_user_id")
        amount = request.amount

        async def transfer(repo: Any) -> list[Row]:
            users = _referred(repo, "user_id")
            # Rows are changed in id order, so two opposite transfers never deadlock.
            if receiver < sender:
                await users.increment(receiver, {"points": amount})
            debited = await users.update_if(
                sender, {"points": users.c.points - amount}, users.c.points >= amount
            )
            if debited is None:
                await _why_not_debited(users, sender, amount)
            if sender < receiver:
                await users.increment(receiver, {"points": amount})
            line = {"source": "transfer", "description": request.description}
            rows: list[Row] = await repo.create_many(
                [
                    {
                        **line,
                        "user_id": sender,
                        "amount": -amount,
                        "kind": "transfer_out",
                        "counterpart_user_id": receiver,
                    },
                    {
                        **line,
                        "user_id": receiver,
                        "amount": amount,
                        "kind": "transfer_in",
                        "counterpart_user_id": sender,
                    },
                ]
            )
            return rows

        return await ledger.write_rows(request, transfer, response)

    return run


async def _why_not_debited(users: DeclaredRepository, sender: uuid.UUID, amount: int) -> None:
    row = await users.get(sender)  # NOT_FOUND for no such user
    if row["delete_time"] is not None:
        raise ResourceDeleted("user", str(sender))
    raise InsufficientPoints(f"the sender has {row['points']} points, fewer than {amount}")


@extensions.method(f"{PACKAGE}.AuctionBidService/PlaceBid")
def place_bid(api: Api) -> Handler:
    bids = api.standard("AuctionBid")

    async def run(request: Any, context: Any) -> Any:
        api.validate(request)
        auction_id = validation.resource_id(request.auction_id, "auction_id")
        user_id = validation.resource_id(request.user_id, "user_id")
        amount = request.amount

        async def bid(repo: Any) -> Row:
            auctions = _referred(repo, "auction_id")
            c = auctions.c
            now = datetime.now(UTC)
            raised = await auctions.update_if(
                auction_id,
                {
                    "current_price": amount,
                    "leader_user_id": str(user_id),
                    "bid_count": c.bid_count + 1,
                },
                c.status == "active",
                or_(c.end_time.is_(None), c.end_time > now),
                c.current_price < amount,
                c.starting_price <= amount,
            )
            if raised is None:
                await _why_not_raised(auctions, auction_id, amount, now)
            # The bidder must be a live user of the tenant: NOT_FOUND or RESOURCE_DELETED
            # otherwise, and the raise above is rolled back with the refusal.
            row: Row = await repo.create(
                {"auction_id": auction_id, "user_id": user_id, "amount": amount}
            )
            return row

        return await bids.write_one(request, bid)

    return run


async def _why_not_raised(
    auctions: DeclaredRepository, auction_id: uuid.UUID, amount: int, now: datetime
) -> None:
    row = await auctions.get(auction_id)  # NOT_FOUND for no such auction
    if row["delete_time"] is not None:
        raise ResourceDeleted("auction", str(auction_id))
    if row["status"] != "active" or (row["end_time"] is not None and row["end_time"] <= now):
        raise AuctionNotOpen(f"the auction is {row['status']} and takes no bids")
    floor = max(row["current_price"] + 1, row["starting_price"])
    raise BidTooLow(f"a bid must be at least {floor}")
