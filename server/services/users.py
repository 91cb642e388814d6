"""repogate.v1.UserService."""

from __future__ import annotations

from grpc import aio

from repogate.v1 import user_pb2, user_pb2_grpc
from repositories.database import Database
from repositories.users import UserRepository
from server import validation
from server.mapping import MessageMapping
from server.page_tokens import PageTokens
from server.resources import Resource, StandardMethods

USER = Resource(
    name="user",
    repository=UserRepository,
    mapping=MessageMapping(
        user_pb2.User, updatable={"email", "username", "display_name", "is_active"}
    ),
    checks={
        "email": validation.email,
        "username": validation.username,
        "display_name": validation.max_length(256),
    },
    required=frozenset({"email", "username"}),
    create_defaults={"display_name": "", "is_active": True},
)


class UserService(user_pb2_grpc.UserServiceServicer):
    def __init__(self, db: Database, tokens: PageTokens) -> None:
        self._users = StandardMethods(USER, db, tokens)

    async def CreateUser(
        self, request: user_pb2.CreateUserRequest, context: aio.ServicerContext
    ) -> user_pb2.User:
        return await self._users.create(request.user)

    async def GetUser(
        self, request: user_pb2.GetUserRequest, context: aio.ServicerContext
    ) -> user_pb2.User:
        return await self._users.get(request.id)

    async def ListUsers(
        self, request: user_pb2.ListUsersRequest, context: aio.ServicerContext
    ) -> user_pb2.ListUsersResponse:
        users, token = await self._users.page(request)
        return user_pb2.ListUsersResponse(users=users, next_page_token=token)

    async def CountUsers(
        self, request: user_pb2.CountUsersRequest, context: aio.ServicerContext
    ) -> user_pb2.CountUsersResponse:
        return user_pb2.CountUsersResponse(total_size=await self._users.count(request.filter))

    async def UpdateUser(
        self, request: user_pb2.UpdateUserRequest, context: aio.ServicerContext
    ) -> user_pb2.User:
        mask = request.update_mask if request.HasField("update_mask") else None
        return await self._users.update(request.user, mask)

    async def DeleteUser(
        self, request: user_pb2.DeleteUserRequest, context: aio.ServicerContext
    ) -> user_pb2.User:
        return await self._users.delete(request.id, request.etag)
