"""Writes with a request id (AIP-155): the first call records its answer with it, in
its own unit of work, and a retry with the id gets that answer instead of writing again.

The record is claimed first, so the claim, the write and the answer commit or roll
back together; two calls racing with one id collide on the claim, and the loser
replays what the winner stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from google.protobuf.message import Message

from repositories.database import RepositorySource
from repositories.errors import AlreadyExists, Conflict, InvalidArgument
from repositories.request_log import Recorded, RequestLog
from server import validation
from server.answers import Encoded
from server.units import Units

# The work of a write: its rows' messages, serialized.
Items = Callable[[RepositorySource], Awaitable[list[bytes]]]
# What those items answer.
Answer = Callable[[list[bytes]], Encoded[Any]]


async def write_once(
    units: Units, request: Message, raw_id: str, keep: timedelta, items: Items, answer: Answer
) -> Encoded[Any]:
    """Runs the write `items` unless `request` ran before under the id `raw_id`, and
    answers as the first call did; the record is kept for `keep`."""
    key = validation.request_id(raw_id)
    method, digest = request.DESCRIPTOR.full_name, request_digest(request)

    async def first_or_replay(uow: RepositorySource) -> Encoded[Any] | Recorded:
        log = uow.repository(RequestLog)
        prior = await log.find(key)
        if prior is not None:
            return prior
        await log.claim(key, method, digest, keep)
        written = await items(uow)
        first = answer(written)  # refuses, before anything commits, what cannot be sent
        await log.complete(key, written)
        return first

    try:
        outcome = await units.write(first_or_replay)
    except AlreadyExists as exc:
        if exc.field != "request_id":
            raise
        # A concurrent call with this id committed first: answer as it did.
        # On the primary: a replica may not have the concurrent call's record yet.
        prior = await units.read(lambda uow: uow.repository(RequestLog).find(key), primary=True)
        if prior is None:
            raise Conflict("a concurrent call with this request_id failed; retry") from None
        outcome = prior
    if not isinstance(outcome, Recorded):
        return outcome
    if (outcome.method, outcome.digest) != (method, digest):
        raise InvalidArgument.field(
            "request_id",
            "was already used for a different request; use a new UUID for each request",
            reason="REQUEST_ID_REUSED",
        )
    return answer(outcome.items)


def request_digest(request: Message) -> str:
    """What makes two requests the same request: everything but the request id."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    # Batch items' own request ids are ignored, so they do not count either.
    for item in getattr(copy, "requests", ()):
        if "request_id" in item.DESCRIPTOR.fields_by_name:
            item.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()
