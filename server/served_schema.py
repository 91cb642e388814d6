"""The services of REPOGATE_SCHEMA, as the composition root adds them to the server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from schema.declared import Declared, declare
from schema.loading import load
from schema.serving import register
from schema.shapes import Binding, bind
from server.resources import Resource, StandardMethods


@dataclass(frozen=True)
class Served:
    declared: Declared
    services: list[tuple[str, list[Binding]]]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.services)

    def register(
        self, server: Any, make: Callable[[Resource[Any]], StandardMethods[Any]]
    ) -> list[tuple[ServiceDescriptor, object]]:
        return register(self.declared, self.services, server, make)


def declared_services(path: str | None) -> Served | None:
    """The schema at `path`, loaded and bound; None without one. Raises SchemaError."""
    if path is None:
        return None
    declared = declare(load(path))
    return Served(declared, bind(declared))
