"""repogate.v1.SessionService: the standard methods, counters and purging."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeAlias

from grpc import aio

from repogate.v1 import session_pb2 as pb
from repogate.v1 import session_pb2_grpc
from repositories.sessions import SessionRepository
from repositories.tables import SESSION_STATUSES
from schema.declared import resource_of
from server import validation
from server.answers import Encoded
from server.page_tokens import PageTokens
from server.read_through import ReadThrough
from server.resource_types import Policy
from server.resources import StandardMethods
from server.services.messages import MESSAGE
from server.units import Units

# Declared in session.proto (its repogate.options); these are the checks beyond it.
SESSION = resource_of(
    pb.Session,
    SessionRepository,
    checks={
        "user_id": validation.uuid_text,
        "name": validation.max_length(256),
        "status": validation.one_of(SESSION_STATUSES),
        "preferences": validation.json_document,
    },
    related_to=[MESSAGE],
)
COUNTERS = ("total_messages", "total_tool_calls", "input_tokens", "output_tokens")

Context: TypeAlias = aio.ServicerContext


class SessionService(session_pb2_grpc.SessionServiceServicer):
    def __init__(
        self, units: Units, tokens: PageTokens, policy: Policy, cache: ReadThrough
    ) -> None:
        self._units = units
        self._sessions = StandardMethods(SESSION, units, tokens, policy, cache)

    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: Context
    ) -> Encoded[pb.Session]:
        return await self._sessions.create(request)

    async def GetSession(self, request: pb.GetSessionRequest, context: Context) -> pb.Session:
        return await self._sessions.get(request)

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        page = await self._sessions.page(request)
        return pb.ListSessionsResponse(
            sessions=page.items,
            next_page_token=page.next_page_token,
            total_size=page.total_size,
            total_size_exact=page.total_size_exact,
        )

    async def CountSessions(
        self, request: pb.CountSessionsRequest, context: Context
    ) -> pb.CountSessionsResponse:
        total, exact = await self._sessions.count(request)
        return pb.CountSessionsResponse(total_size=total, total_size_exact=exact)

    async def AggregateSessions(
        self, request: pb.AggregateSessionsRequest, context: Context
    ) -> pb.AggregateSessionsResponse:
        return await self._sessions.aggregate(request, pb.AggregateSessionsResponse)

    async def UpdateSession(
        self, request: pb.UpdateSessionRequest, context: Context
    ) -> Encoded[pb.Session]:
        return await self._sessions.update(request)

    async def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: Context
    ) -> Encoded[pb.Session]:
        return await self._sessions.delete(request)

    async def UndeleteSession(
        self, request: pb.UndeleteSessionRequest, context: Context
    ) -> Encoded[pb.Session]:
        return await self._sessions.undelete(request)

    async def BatchGetSessions(
        self, request: pb.BatchGetSessionsRequest, context: Context
    ) -> pb.BatchGetSessionsResponse:
        return pb.BatchGetSessionsResponse(sessions=await self._sessions.batch_get(request))

    async def BatchCreateSessions(
        self, request: pb.BatchCreateSessionsRequest, context: Context
    ) -> Encoded[pb.BatchCreateSessionsResponse]:
        return await self._sessions.batch_create(request, pb.BatchCreateSessionsResponse)

    async def BatchUpdateSessions(
        self, request: pb.BatchUpdateSessionsRequest, context: Context
    ) -> Encoded[pb.BatchUpdateSessionsResponse]:
        return await self._sessions.batch_update(request, pb.BatchUpdateSessionsResponse)

    async def BatchDeleteSessions(
        self, request: pb.BatchDeleteSessionsRequest, context: Context
    ) -> Encoded[pb.BatchDeleteSessionsResponse]:
        return await self._sessions.batch_delete(request, pb.BatchDeleteSessionsResponse)

    # ------------------------------------------------------------ domain methods

    async def CountActiveSessions(
        self, request: pb.CountActiveSessionsRequest, context: Context
    ) -> pb.CountActiveSessionsResponse:
        user_id = validation.resource_id(request.user_id, "user_id")
        count = await self._units.read(
            lambda uow: uow.repository(SessionRepository).count_active(user_id)
        )
        return pb.CountActiveSessionsResponse(active_count=count)

    async def IncrementSessionMetrics(
        self, request: pb.IncrementSessionMetricsRequest, context: Context
    ) -> Encoded[pb.Session]:
        key = validation.resource_id(request.id, "id")
        amounts: dict[str, int | Decimal] = {
            name: validation.count(getattr(request, name), name) for name in COUNTERS
        }
        if request.total_cost_usd:
            amounts["total_cost_usd"] = validation.amount(request.total_cost_usd, "total_cost_usd")
        added = {name: amount for name, amount in amounts.items() if amount}
        return await self._sessions.write_one(
            request, lambda repo: repo.sibling(SessionRepository).increment(key, added)
        )

    async def TouchSession(
        self, request: pb.TouchSessionRequest, context: Context
    ) -> Encoded[pb.Session]:
        key = validation.resource_id(request.id, "id")
        return await self._sessions.write_one(
            request, lambda repo: repo.sibling(SessionRepository).touch(key)
        )

    async def PurgeSessions(
        self, request: pb.PurgeSessionsRequest, context: Context
    ) -> pb.PurgeSessionsResponse:
        cutoff = validation.timestamp(
            request.cutoff_time, "cutoff_time", not_after=datetime.now(UTC)
        )
        purged = await self._units.write(
            lambda uow: uow.repository(SessionRepository).purge(cutoff)
        )
        return pb.PurgeSessionsResponse(purged_count=purged)
