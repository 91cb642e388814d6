"""How services are added to the server: as generic handlers only.

The generated `add_*Servicer_to_server` functions register each service twice:
as a generic handler, and as "registered methods". grpcio 1.85's aio server keeps
one pending request per registered method and waits on all of them (asyncio.wait)
for every call it accepts, so each call pays for every method of every service:
with Repogate's 80-odd methods, about 50 µs of the event loop per call
(grpc/grpc#43461). Generic handlers are found by one dict lookup per call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import grpc
from grpc import aio


class _GenericOnly:
    def __init__(self, server: aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        """Ignored: the same handlers arrive through add_generic_rpc_handlers."""


def generic_only(server: aio.Server) -> aio.Server:
    """`server` as the generated add_*_to_server functions see it: their generic
    handlers are added, their registered methods are not."""
    return cast(aio.Server, _GenericOnly(server))
