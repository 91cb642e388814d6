"""repogate.v1.MessageService: the standard methods (Create is AppendMessage), the
latest message of a session, and search by JSON containment."""

from __future__ import annotations

import json
from typing import TypeAlias

from grpc import aio

from repogate.v1 import message_pb2 as pb
from repogate.v1 import message_pb2_grpc
from repositories.messages import MessageRepository
from repositories.tables import messages
from schema.declared import resource_of
from server import validation
from server.answers import Encoded
from server.mapping import json_object
from server.page_tokens import PageTokens
from server.read_through import ReadThrough
from server.resource_types import Policy
from server.resources import StandardMethods
from server.units import Units

# Declared in message.proto (its repogate.options); these are the checks beyond it.
MESSAGE = resource_of(
    pb.Message,
    MessageRepository,
    checks={
        "session_id": validation.uuid_text,
        "message_type": validation.token(64),
        "role": validation.max_length(64),
        "content": validation.json_document,
    },
)

Context: TypeAlias = aio.ServicerContext


class MessageService(message_pb2_grpc.MessageServiceServicer):
    def __init__(
        self, units: Units, tokens: PageTokens, policy: Policy, cache: ReadThrough
    ) -> None:
        self._units = units
        self._messages = StandardMethods(MESSAGE, units, tokens, policy, cache)

    async def AppendMessage(
        self, request: pb.AppendMessageRequest, context: Context
    ) -> Encoded[pb.Message]:
        return await self._messages.create(request)

    async def GetMessage(self, request: pb.GetMessageRequest, context: Context) -> pb.Message:
        return await self._messages.get(request)

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: Context
    ) -> pb.ListMessagesResponse:
        page = await self._messages.page(request)
        return pb.ListMessagesResponse(
            messages=page.items,
            next_page_token=page.next_page_token,
            total_size=page.total_size,
            total_size_exact=page.total_size_exact,
        )

    async def CountMessages(
        self, request: pb.CountMessagesRequest, context: Context
    ) -> pb.CountMessagesResponse:
        total, exact = await self._messages.count(request)
        return pb.CountMessagesResponse(total_size=total, total_size_exact=exact)

    async def AggregateMessages(
        self, request: pb.AggregateMessagesRequest, context: Context
    ) -> pb.AggregateMessagesResponse:
        return await self._messages.aggregate(request, pb.AggregateMessagesResponse)

    async def UpdateMessage(
        self, request: pb.UpdateMessageRequest, context: Context
    ) -> Encoded[pb.Message]:
        return await self._messages.update(request)

    async def DeleteMessage(
        self, request: pb.DeleteMessageRequest, context: Context
    ) -> Encoded[pb.Message]:
        return await self._messages.delete(request)

    async def UndeleteMessage(
        self, request: pb.UndeleteMessageRequest, context: Context
    ) -> Encoded[pb.Message]:
        return await self._messages.undelete(request)

    async def BatchGetMessages(
        self, request: pb.BatchGetMessagesRequest, context: Context
    ) -> pb.BatchGetMessagesResponse:
        return pb.BatchGetMessagesResponse(messages=await self._messages.batch_get(request))

    async def BatchAppendMessages(
        self, request: pb.BatchAppendMessagesRequest, context: Context
    ) -> Encoded[pb.BatchAppendMessagesResponse]:
        return await self._messages.batch_create(request, pb.BatchAppendMessagesResponse)

    async def BatchUpdateMessages(
        self, request: pb.BatchUpdateMessagesRequest, context: Context
    ) -> Encoded[pb.BatchUpdateMessagesResponse]:
        return await self._messages.batch_update(request, pb.BatchUpdateMessagesResponse)

    async def BatchDeleteMessages(
        self, request: pb.BatchDeleteMessagesRequest, context: Context
    ) -> Encoded[pb.BatchDeleteMessagesResponse]:
        return await self._messages.batch_delete(request, pb.BatchDeleteMessagesResponse)

    # ------------------------------------------------------------ domain methods

    async def GetLatestMessage(
        self, request: pb.GetLatestMessageRequest, context: Context
    ) -> pb.Message:
        session_id = validation.resource_id(request.session_id, "session_id")
        kind = request.message_type
        if kind:
            validation.valid(kind, validation.token(64), "message_type")
        row = await self._units.read(
            lambda uow: uow.repository(MessageRepository).latest(session_id, kind)
        )
        return MESSAGE.mapping.to_message(row)

    async def SearchMessages(
        self, request: pb.SearchMessagesRequest, context: Context
    ) -> pb.SearchMessagesResponse:
        content = json_object(request.content)
        validation.search_document(content, "content")
        where = MessageRepository.containing(content)
        if request.session_id:
            session_id = validation.resource_id(request.session_id, "session_id")
            where = where & (messages.c.session_id == session_id)
        # Page tokens are good for this search only.
        search = json.dumps([content, request.session_id.lower()], sort_keys=True)
        page = await self._messages.page(request, (where, search))
        return pb.SearchMessagesResponse(
            messages=page.items,
            next_page_token=page.next_page_token,
            total_size=page.total_size,
            total_size_exact=page.total_size_exact,
        )
