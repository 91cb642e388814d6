"""repogate.v1.UserService: one line per RPC over the standard methods."""

from __future__ import annotations

from typing import TypeAlias

from grpc import aio

from repogate.v1 import user_pb2 as pb
from repogate.v1 import user_pb2_grpc
from repositories.errors import InvalidArgument
from repositories.users import UserRepository
from schema.declared import resource_of
from server import validation
from server.answers import Encoded
from server.page_tokens import PageTokens
from server.read_through import ReadThrough
from server.resource_types import Policy
from server.resources import StandardMethods
from server.units import Units

# Declared in user.proto (its repogate.options); these are the checks beyond it.
USER = resource_of(
    pb.User,
    UserRepository,
    checks={
        "email": validation.email,
        "username": validation.username,
        "display_name": validation.max_length(256),
    },
)

Context: TypeAlias = aio.ServicerContext


class UserService(user_pb2_grpc.UserServiceServicer):
    def __init__(
        self, units: Units, tokens: PageTokens, policy: Policy, cache: ReadThrough
    ) -> None:
        self._units = units
        self._users = StandardMethods(USER, units, tokens, policy, cache)

    async def CreateUser(self, request: pb.CreateUserRequest, context: Context) -> Encoded[pb.User]:
        return await self._users.create(request)

    async def GetUser(self, request: pb.GetUserRequest, context: Context) -> pb.User:
        return await self._users.get(request)

    async def ListUsers(
        self, request: pb.ListUsersRequest, context: Context
    ) -> pb.ListUsersResponse:
        page = await self._users.page(request)
        return pb.ListUsersResponse(
            users=page.items,
            next_page_token=page.next_page_token,
            total_size=page.total_size,
            total_size_exact=page.total_size_exact,
        )

    async def CountUsers(
        self, request: pb.CountUsersRequest, context: Context
    ) -> pb.CountUsersResponse:
        total, exact = await self._users.count(request)
        return pb.CountUsersResponse(total_size=total, total_size_exact=exact)

    async def AggregateUsers(
        self, request: pb.AggregateUsersRequest, context: Context
    ) -> pb.AggregateUsersResponse:
        return await self._users.aggregate(request, pb.AggregateUsersResponse)

    async def UpdateUser(self, request: pb.UpdateUserRequest, context: Context) -> Encoded[pb.User]:
        return await self._users.update(request)

    async def DeleteUser(self, request: pb.DeleteUserRequest, context: Context) -> Encoded[pb.User]:
        return await self._users.delete(request)

    async def UndeleteUser(
        self, request: pb.UndeleteUserRequest, context: Context
    ) -> Encoded[pb.User]:
        return await self._users.undelete(request)

    async def BatchGetUsers(
        self, request: pb.BatchGetUsersRequest, context: Context
    ) -> pb.BatchGetUsersResponse:
        return pb.BatchGetUsersResponse(users=await self._users.batch_get(request))

    async def BatchCreateUsers(
        self, request: pb.BatchCreateUsersRequest, context: Context
    ) -> Encoded[pb.BatchCreateUsersResponse]:
        return await self._users.batch_create(request, pb.BatchCreateUsersResponse)

    async def BatchUpdateUsers(
        self, request: pb.BatchUpdateUsersRequest, context: Context
    ) -> Encoded[pb.BatchUpdateUsersResponse]:
        return await self._users.batch_update(request, pb.BatchUpdateUsersResponse)

    async def BatchDeleteUsers(
        self, request: pb.BatchDeleteUsersRequest, context: Context
    ) -> Encoded[pb.BatchDeleteUsersResponse]:
        return await self._users.batch_delete(request, pb.BatchDeleteUsersResponse)

    # ------------------------------------------------------------ domain methods

    async def GetUserByEmail(self, request: pb.GetUserByEmailRequest, context: Context) -> pb.User:
        email = validation.valid(request.email, validation.email, "email")
        return await self._find("email", email)

    async def GetUserByUsername(
        self, request: pb.GetUserByUsernameRequest, context: Context
    ) -> pb.User:
        username = validation.valid(request.username, validation.username, "username")
        return await self._find("username", username)

    async def RecordLogin(
        self, request: pb.RecordLoginRequest, context: Context
    ) -> Encoded[pb.User]:
        key = validation.resource_id(request.id, "id")
        return await self._users.write_one(
            request, lambda repo: repo.sibling(UserRepository).record_login(key)
        )

    async def CheckUserExists(
        self, request: pb.CheckUserExistsRequest, context: Context
    ) -> pb.CheckUserExistsResponse:
        if not (request.email or request.username):
            raise InvalidArgument.field("email", "an email, a username or both are required")
        if request.email:
            validation.valid(request.email, validation.email, "email")
        if request.username:
            validation.valid(request.username, validation.username, "username")
        email, username = await self._units.read(
            lambda uow: uow.repository(UserRepository).taken(request.email, request.username)
        )
        return pb.CheckUserExistsResponse(email_taken=email, username_taken=username)

    async def _find(self, field: str, value: str) -> pb.User:
        row = await self._units.read(lambda uow: uow.repository(UserRepository).find(field, value))
        return USER.mapping.to_message(row)
