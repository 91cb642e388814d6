"""Behaviour no standard method gives, registered against a schema's methods by name.

A module named in REPOGATE_EXTENSIONS holds an `Extensions` called `extensions`; each
of its methods returns the handler of one RPC of the schema, given an `Api`:

    from schema.extensions import Api, Extensions

    extensions = Extensions()

    @extensions.method("acme.auctions.v1.AuctionService/PlaceBid")
    def place_bid(api: Api):
        auctions = api.standard("Auction")

        async def run(request, context):
            ...  # validate, then auctions.write_one(request, lambda repo: ...)

        return run

A handler runs as the standard methods do: in the call's tenant, inside the request
interceptor (errors become AIP-193 statuses), and its writes through `write_one` or
`write_rows` join the call's transaction, retry on conflicts and replay request ids.
See docs/schema.md#extensions.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from schema import rules
from schema.model import SchemaError
from server.resources import StandardMethods
from server.units import Units

Handler = Callable[[Any, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Api:
    """What an extension's handlers may use."""

    units: Units
    # Each resource's standard methods, by its message's full and short name.
    resources: Mapping[str, StandardMethods[Any]]

    @staticmethod
    def validate(request: Message) -> None:
        """Runs the request's buf.validate rules: INVALID_ARGUMENT naming each field."""
        rules.check(request, None, "")

    def standard(self, resource: str) -> StandardMethods[Any]:
        """A resource's standard methods, by its message's name ("Auction")."""
        try:
            return self.resources[resource]
        except KeyError:
            known = ", ".join(sorted(name for name in self.resources if "." not in name))
            raise SchemaError(f"no resource {resource!r} (the schema has {known})") from None


Extension = Callable[[Api], Handler]


class Extensions:
    """Extensions by the full method name they serve ("pkg.Service/Method")."""

    def __init__(self) -> None:
        self.methods: dict[str, Extension] = {}

    def method(self, name: str) -> Callable[[Extension], Extension]:
        if name.count("/") != 1:
            raise ValueError(f"{name!r}: name a method as package.Service/Method")

        def register(extension: Extension) -> Extension:
            if name in self.methods:
                raise ValueError(f"{name}: registered twice")
            self.methods[name] = extension
            return extension

        return register


def load(modules: Iterable[str]) -> dict[str, Extension]:
    """Every method the `modules` (import paths) register."""
    found: dict[str, Extension] = {}
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise SchemaError(f"extension module {module_name!r}: {exc}") from None
        extensions = getattr(module, "extensions", None)
        if not isinstance(extensions, Extensions):
            raise SchemaError(
                f"extension module {module_name!r} has no `extensions = Extensions()`"
            )
        for name, extension in extensions.methods.items():
            if name in found:
                raise SchemaError(f"{name}: registered by two extension modules")
            found[name] = extension
    return found
