"""Loading a schema: .proto files compiled at start, or a `buf build` image.

A directory is compiled with grpcio-tools' bundled protoc. Its files may import
the well-known types, `repogate/options/v1/options.proto`, Repogate's own
`repogate/v1/*.proto` and protovalidate's `buf/validate/validate.proto`: those
reach protoc as descriptors (`--descriptor_set_in`) taken from the installed
packages, so no .proto of theirs has to be on disk.

The loaded files join the process's default descriptor pool: their messages use
the same well-known types (Timestamp, Struct) as every other message here, and
reflection answers for them as for the built-in services.
"""

from __future__ import annotations

import functools
import importlib
import importlib.resources
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FileDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from repogate.options.v1 import options_pb2
from schema import related
from schema.model import ResourceSpec, SchemaError, is_resource, resource_spec

# Files the schema may import whose descriptors Repogate supplies.
_OPTIONS = options_pb2.DESCRIPTOR.name


@dataclass(frozen=True)
class Schema:
    """The user's files, resources and services, loaded into the default pool."""

    files: tuple[descriptor_pb2.FileDescriptorProto, ...]
    resources: dict[str, ResourceSpec]  # by the message's full name
    services: tuple[ServiceDescriptor, ...]

    def message_class(self, descriptor: Descriptor) -> type[Message]:
        return message_factory.GetMessageClass(descriptor)

    def resource(self, name: str) -> ResourceSpec:
        """A resource by its message's full or short name."""
        if name in self.resources:
            return self.resources[name]
        found = [spec for spec in self.resources.values() if spec.message.name == name]
        if len(found) != 1:
            raise KeyError(name)
        return found[0]


def load(path: str | Path) -> Schema:
    """The schema at `path`: a directory of .proto files, or a FileDescriptorSet
    (a `buf build -o image.binpb` image). Raises SchemaError saying what is wrong."""
    path = Path(path)
    if path.is_dir():
        fds = compile_directory(path)
    elif path.is_file():
        try:
            fds = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
        except Exception:
            raise SchemaError(f"{path}: not a FileDescriptorSet (buf build -o x.binpb)") from None
    else:
        raise SchemaError(f"{path}: no such directory or descriptor set")
    own = _own_files(fds, path)
    _add_to_default_pool(fds.file, {f.name for f in own})
    pool = descriptor_pool.Default()
    files = [pool.FindFileByName(f.name) for f in own]
    resources: dict[str, ResourceSpec] = {}
    tables: dict[str, str] = {}
    for message in _messages(files):
        if not is_resource(message):
            continue
        spec = resource_spec(message)
        if spec.table in tables or spec.table in _BUILT_IN_TABLES:
            other = tables.get(spec.table, "a built-in resource")
            raise SchemaError(f"{message.full_name}: table {spec.table!r} is {other}'s too")
        tables[spec.table] = message.full_name
        resources[message.full_name] = spec
    related.check(resources)
    services = tuple(s for f in files for s in f.services_by_name.values())
    return Schema(tuple(own), resources, services)


def compile_directory(directory: Path) -> descriptor_pb2.FileDescriptorSet:
    """Every .proto under `directory`, with its imports, as one FileDescriptorSet."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # only to compile

    sources = sorted(str(p.relative_to(directory)) for p in directory.rglob("*.proto"))
    if not sources:
        raise SchemaError(f"{directory}: no .proto files")
    includes = str(importlib.resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory(prefix="repogate-schema-") as tmp:
        supplied = Path(tmp, "supplied.binpb")
        supplied.write_bytes(supplied_descriptors()[0])
        out = Path(tmp, "schema.binpb")
        # protoc prints its own errors on stderr, naming file, line and column.
        code = protoc.main(
            [
                "protoc",
                f"-I{directory}",
                f"-I{includes}",
                f"--descriptor_set_in={supplied}",
                "--include_imports",
                f"--descriptor_set_out={out}",
                *sources,
            ]
        )
        if code != 0 or not out.exists():
            raise SchemaError(f"{directory}: protoc failed (its messages are above)")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


@functools.cache
def supplied_descriptors() -> tuple[bytes, frozenset[str]]:
    """The files a schema may import that Repogate supplies: a serialized
    FileDescriptorSet, and their names. Made once a process: the installed packages
    they come from do not change under it."""
    pool = descriptor_pool.Default()
    names = [_OPTIONS, *_built_in_files()]
    supplied = [_proto(pool.FindFileByName(name)) for name in names]
    supplied.append(validate_file())
    serialized = descriptor_pb2.FileDescriptorSet(file=supplied).SerializeToString()
    return serialized, frozenset(f.name for f in supplied)


def validate_file() -> descriptor_pb2.FileDescriptorProto:
    """protovalidate's buf/validate/validate.proto, from the installed package (which
    carries its descriptor, not its source)."""
    from protovalidate._gen.buf.validate import validate_pb

    return descriptor_pb2.FileDescriptorProto.FromString(validate_pb.desc().proto.to_binary())


def _built_in_files() -> list[str]:
    # The generated modules register themselves in the default pool when imported.
    from repogate import v1

    root = importlib.resources.files(v1)
    modules = sorted(p.name for p in root.iterdir() if p.name.endswith("_pb2.py"))
    for module in modules:
        importlib.import_module(f"repogate.v1.{module.removesuffix('.py')}")
    return [f"repogate/v1/{m.removesuffix('_pb2.py')}.proto" for m in modules]


def _proto(f: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    f.CopyToProto(proto)
    return proto


def _own_files(
    fds: descriptor_pb2.FileDescriptorSet, path: Path
) -> list[descriptor_pb2.FileDescriptorProto]:
    """The schema's own files: not the well-known types nor what Repogate supplies."""
    supplied = supplied_descriptors()[1]
    own = [
        f for f in fds.file if f.name not in supplied and not f.name.startswith("google/protobuf/")
    ]
    if not own:
        raise SchemaError(f"{path}: declares no file of its own")
    return own


def _add_to_default_pool(
    files: Iterable[descriptor_pb2.FileDescriptorProto], own: set[str]
) -> None:
    """Adds the files the pool lacks. A file it has is kept: the well-known types and
    Repogate's own are the installed ones; one of the schema's must be the same file."""
    pool = descriptor_pool.Default()
    for f in files:
        try:
            existing = pool.FindFileByName(f.name)
        except KeyError:
            existing = None
        if existing is not None:
            if f.name in own and _parsed(existing.serialized_pb) != f:
                raise SchemaError(f"{f.name}: another file of that name is already loaded")
            continue
        try:
            pool.Add(f)
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"{f.name}: {exc}") from None


def _parsed(serialized: bytes) -> descriptor_pb2.FileDescriptorProto:
    return descriptor_pb2.FileDescriptorProto.FromString(serialized)


def _messages(files: Iterable[FileDescriptor]) -> Iterable[Descriptor]:
    def walk(message: Descriptor) -> Iterable[Descriptor]:
        yield message
        for nested in message.nested_types:
            yield from walk(nested)

    for f in files:
        for message in f.message_types_by_name.values():
            yield from walk(message)


_BUILT_IN_TABLES = frozenset(
    {"users", "sessions", "messages", "jobs", "request_ids", "transaction_outcomes"}
    | {"repogate_changes", "repogate_schema", "alembic_version"}
)
