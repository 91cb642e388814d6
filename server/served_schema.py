"""The services of REPOGATE_SCHEMA, as the composition root adds them to the server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from schema import extensions
from schema.declared import Declared, declare
from schema.extensions import Extension
from schema.loading import load
from schema.model import SchemaError
from schema.serving import register
from schema.shapes import Binding, bind
from server.resource_types import Resource
from server.resources import StandardMethods
from server.units import Units


@dataclass(frozen=True)
class Served:
    declared: Declared
    services: list[tuple[str, list[Binding]]]
    extensions: dict[str, Extension]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.services)

    def register(
        self,
        server: Any,
        make: Callable[[Resource[Any]], StandardMethods[Any]],
        units: Units,
    ) -> list[tuple[ServiceDescriptor, object]]:
        return register(self.declared, self.services, server, make, units, self.extensions)


def declared_services(path: str | None, extension_modules: str = "") -> Served | None:
    """The schema at `path`, loaded and bound with the extensions the comma-separated
    `extension_modules` register; None without a schema. Raises SchemaError."""
    if path is None:
        if extension_modules.strip():
            raise SchemaError("REPOGATE_EXTENSIONS needs a REPOGATE_SCHEMA to extend")
        return None
    declared = declare(load(path))
    names = [name.strip() for name in extension_modules.split(",") if name.strip()]
    found = extensions.load(names)
    return Served(declared, bind(declared, found), found)
