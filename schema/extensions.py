"""Behaviour no standard method gives, registered against a schema's methods by name.

A module named in REPOGATE_EXTENSIONS (by import path or file path) holds an
`Extensions` called `extensions`; each of its methods returns the handler of one RPC of
the schema, given an `Api`:

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

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
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
    """Every method the `modules` register: each an import path (`acme.extensions`) or
    the path of a Python file (`schemas/acme/extensions.py`, from the current directory),
    which needs nothing on PYTHONPATH."""
    found: dict[str, Extension] = {}
    for module_name in modules:
        try:
            module = _module(module_name)
        except (ImportError, OSError, SyntaxError) as exc:
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


def _module(name: str) -> ModuleType:
    if not name.endswith(".py"):
        return importlib.import_module(name)
    path = Path(name).resolve()
    if not path.is_file():
        raise ImportError("no such file")
    # One module per file, however often it is named: its registry is built once.
    key = "repogate_extensions." + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    # A .py file always has both.
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module
