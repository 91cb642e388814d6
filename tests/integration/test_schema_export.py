"""`schema export` (schema/export.py): the directory it writes compiles on its own,
with the real protoc and buf, and holds Repogate's own .proto files as protos/ has them.

protovalidate's validate.proto comes from the BSR (`buf dep update`, which needs the
network), and no copy of its source is installed here: where a schema uses it, protoc
gets that one file as a descriptor (the installed protovalidate package's) and every
other file from the export; buf builds an export of a schema that does not use it."""

from __future__ import annotations

import importlib.resources
import subprocess
from pathlib import Path

import pytest
import yaml
from google.protobuf import descriptor_pb2

from schema.export import export
from schema.loading import validate_file
from schema.model import SchemaError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "tests" / "schemas" / "tasks"
BUF = ROOT / "node_modules" / ".bin" / "buf"
# A schema without buf.validate rules: its export needs nothing from the network.
PLAIN = """\
syntax = "proto3";

package exported.notes.v1;

import "google/protobuf/timestamp.proto";
import "repogate/options/v1/options.proto";

message Note {
  option (repogate.options.v1.resource) = {};

  string id = 1;
  string etag = 2;
  google.protobuf.Timestamp create_time = 3;
  google.protobuf.Timestamp update_time = 4;
  string text = 5 [(repogate.options.v1.field).filterable = true];
}

service NoteService {
  rpc GetNote(GetNoteRequest) returns (Note);
}

message GetNoteRequest {
  string id = 1;
}
"""


def protoc(proto: Path, out: Path) -> descriptor_pb2.FileDescriptorSet:
    """Compiles every file under `proto` with grpcio-tools' protoc: the well-known types
    from its bundled includes, buf/validate/validate.proto as a descriptor, nothing else."""
    from grpc_tools import protoc as tool  # type: ignore[import-untyped]

    validate = out / "validate.binpb"
    validate.write_bytes(
        descriptor_pb2.FileDescriptorSet(file=[validate_file()]).SerializeToString()
    )
    image = out / "image.binpb"
    sources = sorted(str(p.relative_to(proto)) for p in proto.rglob("*.proto"))
    code = tool.main(
        [
            "protoc",
            f"-I{proto}",
            f"-I{importlib.resources.files('grpc_tools') / '_proto'}",
            f"--descriptor_set_in={validate}",
            "--include_imports",
            f"--descriptor_set_out={image}",
            *sources,
        ]
    )
    assert code == 0
    return descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes())


def test_the_example_schema_exports_with_repogates_files_and_compiles(tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = export(TASKS, out)

    own = sorted(p.relative_to(TASKS) for p in TASKS.rglob("*.proto"))
    shipped = sorted(p.relative_to(ROOT / "protos") for p in (ROOT / "protos").rglob("*.proto"))
    google = ROOT / "third_party" / "googleapis"
    vendored = sorted(p.relative_to(google) for p in google.glob("google/api/*.proto"))
    assert written == sorted(
        [
            Path("buf.gen.yaml"),
            Path("buf.yaml"),
            *(Path("proto", p) for p in own + shipped + vendored),
        ]
    )
    for path in own:
        assert (out / "proto" / path).read_bytes() == (TASKS / path).read_bytes()
    for path in shipped:  # the installed package's copies are protos/' files
        assert (out / "proto" / path).read_bytes() == (ROOT / "protos" / path).read_bytes()
    for path in vendored:  # googleapis-common-protos' copies are third_party/'s
        assert (out / "proto" / path).read_bytes() == (google / path).read_bytes()

    compiled = protoc(out / "proto", tmp_path)
    names = {f.name for f in compiled.file}
    assert {str(p) for p in own} <= names
    assert "buf/validate/validate.proto" in names

    buf_yaml = yaml.safe_load((out / "buf.yaml").read_text())
    assert buf_yaml["version"] == "v2"
    assert buf_yaml["modules"] == [{"path": "proto"}]
    assert buf_yaml["deps"] == ["buf.build/bufbuild/protovalidate"]
    gen = yaml.safe_load((out / "buf.gen.yaml").read_text())
    assert gen["version"] == "v2"
    assert [p["remote"] for p in gen["plugins"]] == [
        "buf.build/protocolbuffers/go",
        "buf.build/grpc/go",
        "buf.build/bufbuild/es",
    ]


@pytest.mark.skipif(not BUF.exists(), reason="buf is not installed: make node_modules/.bin/buf")
def test_buf_builds_an_export_offline(tmp_path: Path) -> None:
    schema = tmp_path / "schema"
    (schema / "exported" / "notes" / "v1").mkdir(parents=True)
    (schema / "exported" / "notes" / "v1" / "note.proto").write_text(PLAIN)
    out = tmp_path / "out"
    export(schema, out)

    assert "deps" not in yaml.safe_load((out / "buf.yaml").read_text())
    image = tmp_path / "image.binpb"
    done = subprocess.run(
        [str(BUF), "build", "-o", str(image)], cwd=out, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    built = {f.name for f in descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes()).file}
    assert {"exported/notes/v1/note.proto", "repogate/options/v1/options.proto"} <= built
    assert "repogate/v1/user.proto" in built


def test_export_refuses_what_it_cannot_write_honestly(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"directory of \.proto files"):
        export(tmp_path / "missing", tmp_path / "out")

    taken = tmp_path / "taken"
    (taken / "proto" / "repogate" / "v1").mkdir(parents=True)
    (taken / "buf.yaml").write_text("mine\n")
    with pytest.raises(SchemaError, match=r"would overwrite buf\.yaml"):
        export(TASKS, taken)
    assert (taken / "buf.yaml").read_text() == "mine\n"
    assert not (taken / "proto" / "acme").exists()  # nothing written

    clash = tmp_path / "clash"
    (clash / "repogate" / "v1").mkdir(parents=True)
    (clash / "repogate" / "v1" / "mine.proto").write_text(
        PLAIN.replace("exported.notes.v1", "repogate.v1").replace("Note", "Mine")
    )
    with pytest.raises(SchemaError, match="repogate/ is Repogate's own"):
        export(clash, tmp_path / "out")

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.proto").write_text('syntax = "proto3";\nmessage {\n')
    with pytest.raises(SchemaError, match="protoc failed"):
        export(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()
