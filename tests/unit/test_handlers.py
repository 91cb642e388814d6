"""Services reach the server as generic handlers only (see server/handlers.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest
from grpc import aio

from repogate.v1 import user_pb2_grpc
from server.handlers import generic_only

pytestmark = pytest.mark.unit


class Recording:
    """Stands in for the grpc.aio server: records what it is asked to add."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self.registered.append(service)


@dataclass(frozen=True)
class Details:
    method: str


def add_users(server: Any) -> None:
    user_pb2_grpc.add_UserServiceServicer_to_server(user_pb2_grpc.UserServiceServicer(), server)


def test_generated_code_registers_methods_when_left_alone() -> None:
    server = Recording()
    add_users(server)
    assert server.registered == ["repogate.v1.UserService"]


def test_generic_only_adds_the_generic_handler_and_no_registered_methods() -> None:
    server = Recording()
    add_users(generic_only(cast(aio.Server, server)))
    assert server.registered == []
    (handler,) = server.generic
    assert handler.service(Details("/repogate.v1.UserService/GetUser")) is not None
    assert handler.service(Details("/repogate.v1.UserService/NoSuchMethod")) is None
