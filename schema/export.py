"""`repogate schema export`: a schema's .proto files with Repogate's, as a directory a
Go or TypeScript team runs `buf generate` in for typed stubs of their own services.

The directory holds:

- `proto/`: the schema's own files, as written, and Repogate's
  `repogate/options/v1/options.proto` and `repogate/v1/*.proto`, copied from the
  installed package (make gen ships them as package data), with the two
  `google/api` files they import (field_behavior, resource) from
  googleapis-common-protos;
- `buf.yaml`: one module, `proto/`, taking protovalidate's `buf/validate/validate.proto`
  from its BSR module `buf.build/bufbuild/protovalidate` when a file imports it
  (`buf dep update` fetches it over the network, once, and writes `buf.lock`);
- `buf.gen.yaml`: an example with remote plugins for Go (messages and gRPC) and
  TypeScript (protobuf-es, whose service descriptors Connect and gRPC clients use).

The well-known types come with buf and protoc themselves.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from schema.loading import compile_directory
from schema.model import SchemaError

VALIDATE = "buf/validate/validate.proto"
VALIDATE_MODULE = "buf.build/bufbuild/protovalidate"
# Repogate's files, by the package holding them and the path they are imported by.
_SHIPPED = (("repogate.options.v1", "repogate/options/v1"), ("repogate.v1", "repogate/v1"))
# What Repogate's files import from googleapis-common-protos (a dependency).
_GOOGLE_API = ("field_behavior.proto", "resource.proto")

BUF_YAML = """\
# Written by `repogate schema export`.
version: v2
modules:
  - path: proto
{deps}lint:
  use:
    - STANDARD
  # AIP standard methods return the resource itself, as Repogate's services do.
  except:
    - RPC_REQUEST_RESPONSE_UNIQUE
    - RPC_RESPONSE_STANDARD_NAME
breaking:
  use:
    - FILE
"""
DEPS = f"""\
# buf.validate's rules: run `buf dep update` once (it needs the network) to pin
# the module in buf.lock; later builds use buf's cache.
deps:
  - {VALIDATE_MODULE}
"""
BUF_GEN_YAML = f"""\
# Written by `repogate schema export`: an example. Remote plugins run on the
# Buf Schema Registry (`buf generate` needs the network); keep the languages you use.
version: v2
managed:
  enabled: true
  disable:
    # protovalidate's Go types live in its own published module.
    - file_option: go_package
      module: {VALIDATE_MODULE}
  override:
    # The Go import path the generated packages will have: your module's.
    - file_option: go_package_prefix
      value: example.com/yourteam/gen/go
plugins:
  # Go: messages, and gRPC clients and servers.
  - remote: buf.build/protocolbuffers/go
    out: gen/go
    opt: paths=source_relative
  - remote: buf.build/grpc/go
    out: gen/go
    opt: paths=source_relative
  # TypeScript: messages and service descriptors (protobuf-es v2), which
  # @connectrpc/connect's clients take, over the gRPC or Connect protocol.
  - remote: buf.build/bufbuild/es
    out: gen/ts
    opt: target=ts
"""


def export(schema_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Writes the schema at `schema_path` (a directory of .proto files) and Repogate's
    files into `out_dir`, with buf.yaml and buf.gen.yaml. The schema is compiled first:
    a schema that would not load is not exported. `out_dir` may exist but must hold no
    file this writes. Answers the files written, relative to `out_dir`. Raises
    SchemaError saying what is wrong."""
    source, out = Path(schema_path), Path(out_dir)
    if not source.is_dir():
        raise SchemaError(f"{source}: export needs the directory of .proto files")
    compiled = compile_directory(source)
    own = sorted(p.relative_to(source) for p in source.rglob("*.proto"))
    shipped = _shipped()
    files: dict[Path, bytes] = {}
    for path in own:
        if path.parts[0] == "repogate":
            raise SchemaError(f"{source / path}: repogate/ is Repogate's own; name it otherwise")
        files[Path("proto", path)] = (source / path).read_bytes()
    for path, text in shipped.items():
        files[Path("proto", path)] = text
    validated = any(VALIDATE in f.dependency for f in compiled.file)
    files[Path("buf.yaml")] = BUF_YAML.format(deps=DEPS if validated else "").encode()
    files[Path("buf.gen.yaml")] = BUF_GEN_YAML.encode()
    taken = sorted(str(p) for p in files if (out / p).exists())
    if taken:
        raise SchemaError(f"{out}: would overwrite {', '.join(taken)}")
    for path, content in files.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(content)
    return sorted(files)


def _shipped() -> dict[Path, bytes]:
    """Repogate's .proto files from the installed package, by import path."""
    found: dict[Path, bytes] = {}
    for package, prefix in _SHIPPED:
        root = importlib.resources.files(package)
        for entry in root.iterdir():
            if entry.name.endswith(".proto"):
                found[Path(prefix, entry.name)] = entry.read_bytes()
    if {path.parent.as_posix() for path in found} != {prefix for _, prefix in _SHIPPED}:
        raise SchemaError(
            "this installation of Repogate ships no .proto files (generated/ predates them: "
            "run make gen)"
        )
    google_api = importlib.resources.files("google.api")
    for name in _GOOGLE_API:
        found[Path("google/api", name)] = google_api.joinpath(name).read_bytes()
    return found
