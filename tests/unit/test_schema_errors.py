"""A schema Repogate cannot store or serve is refused at load, naming where and why."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from schema.declared import declare
from schema.loading import load
from schema.model import SchemaError
from schema.shapes import bind

pytestmark = pytest.mark.unit

HEADER = """syntax = "proto3";
package {package};
import "google/protobuf/timestamp.proto";
import "repogate/options/v1/options.proto";
"""


def write(tmp_path: Path, body: str) -> tuple[Path, str]:
    """A schema directory holding one file with `body`, in a package of its own (the
    process's descriptor pool keeps every file loaded)."""
    package = f"bad{uuid.uuid4().hex[:10]}.v1"
    directory = tmp_path / "schema"
    directory.mkdir()
    (directory / f"{package.replace('.', '_')}.proto").write_text(
        HEADER.format(package=package) + body
    )
    return directory, package


def refusal(tmp_path: Path, body: str) -> str:
    directory, _ = write(tmp_path, body)
    with pytest.raises(SchemaError) as error:
        bind(declare(load(directory)))
    return str(error.value)


RESOURCE = "option (repogate.options.v1.resource) = {};\n  string id = 1;\n"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("map<string, string> labels = 2;", "labels: maps are not stored"),
        ("uint64 big = 2;", "big: a uint64 cannot be stored"),
        (
            "repeated string nicks = 2 [(repogate.options.v1.field).sortable = true];",
            "nicks: a list field cannot be sorted on",
        ),
        (
            'string owner_id = 2 [(repogate.options.v1.field).reference.resource = "Nobody"];',
            "owner_id: refers to 'Nobody', no resource of this schema",
        ),
        (
            'int64 n = 2 [(repogate.options.v1.field).sequence.parent = "id"];',
            "n: sequence parent 'id' is no reference",
        ),
        (
            'int32 size = 2 [(repogate.options.v1.field).default = "\\"big\\""];',
            "size: default '\"big\"' does not fit a int32",
        ),
        (
            "string etag = 2 [(repogate.options.v1.field).filterable = true];",
            "etag: Repogate manages it; it takes no options",
        ),
        ("int32 create_time = 2;", "create_time: Repogate manages it; declare it as a timestamp"),
        (
            "string name = 2 [(repogate.options.v1.field).counter = true];",
            "name: a counter must be an integer",
        ),
    ],
)
def test_a_field_repogate_cannot_store_is_named(tmp_path: Path, fields: str, expected: str) -> None:
    message = refusal(tmp_path, f"message Thing {{\n  {RESOURCE}  {fields}\n}}\n")
    assert expected in message
    assert ".Thing." in message  # the full name of the message, then the field


def test_a_resource_needs_an_id(tmp_path: Path) -> None:
    body = "message Thing {\n  option (repogate.options.v1.resource) = {};\n  string name = 1;\n}\n"
    assert "Thing: a resource needs a `string id` field" in refusal(tmp_path, body)


def test_two_resources_cannot_share_a_table(tmp_path: Path) -> None:
    body = (
        'message A {\n  option (repogate.options.v1.resource) = {table: "things"};\n'
        "  string id = 1;\n}\n"
        'message B {\n  option (repogate.options.v1.resource) = {table: "things"};\n'
        "  string id = 1;\n}\n"
    )
    assert "table 'things' is" in refusal(tmp_path, body)


def test_a_built_in_table_name_is_refused(tmp_path: Path) -> None:
    body = 'message A {\n  option (repogate.options.v1.resource) = {table: "users"};\n'
    body += "  string id = 1;\n}\n"
    assert "table 'users' is a built-in resource's too" in refusal(tmp_path, body)


def test_every_method_that_fits_no_standard_shape_is_named(tmp_path: Path) -> None:
    body = (
        f"message Thing {{\n  {RESOURCE}}}\n"
        "message GetThingRequest { int32 id = 1; }\n"
        "message PingRequest {}\n"
        "service ThingService {\n"
        "  rpc GetThing(GetThingRequest) returns (Thing);\n"
        "  rpc Ping(PingRequest) returns (Thing);\n"
        "  rpc CreateThing(PingRequest) returns (Thing);\n"
        "}\n"
    )
    message = refusal(tmp_path, body)
    assert "ThingService.GetThing: GetThingRequest needs a field `string id`" in message
    assert "ThingService.Ping: its name is no standard method of a resource" in message
    assert "ThingService.CreateThing: PingRequest needs a field `message thing`" in message


def test_read_mask_and_allow_missing_of_another_type_are_named(tmp_path: Path) -> None:
    body = (
        f"message Thing {{\n  {RESOURCE}}}\n"
        "message GetThingRequest { string id = 1; string read_mask = 2; }\n"
        "message UpdateThingRequest {\n"
        "  Thing thing = 1;\n  Thing update_mask = 2;\n  string allow_missing = 3;\n}\n"
        "service ThingService {\n"
        "  rpc GetThing(GetThingRequest) returns (Thing);\n"
        "  rpc UpdateThing(UpdateThingRequest) returns (Thing);\n"
        "}\n"
    )
    message = refusal(tmp_path, body)
    assert "GetThing: GetThingRequest needs a field `message read_mask`" in message
    assert "UpdateThing: UpdateThingRequest needs a field `bool allow_missing`" in message


def test_protoc_errors_are_a_schema_error(tmp_path: Path) -> None:
    directory, _ = write(tmp_path, "message Broken { string id = 1 }\n")
    with pytest.raises(SchemaError, match="protoc failed"):
        load(directory)


def test_a_good_schema_declares_its_resources(tmp_path: Path) -> None:
    body = (
        "message TaskRun {\n  option (repogate.options.v1.resource) = {};\n"
        "  string id = 1;\n  google.protobuf.Timestamp create_time = 2;\n"
        "  optional string note = 3;\n}\n"
    )
    directory, package = write(tmp_path, body)
    declared = declare(load(directory))
    spec = declared.spec(f"{package}.TaskRun")
    assert (spec.singular, spec.plural, spec.table) == ("task_run", "task_runs", "task_runs")
    assert [(f.name, f.kind, f.nullable) for f in spec.fields] == [("note", "string", True)]
    assert declared.tables[f"{package}.TaskRun"].c.note.nullable


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        ('"nick.x"', "index field nick.x: 'nick' is not a Struct field"),
        ('"missing.x"', "index field missing.x: 'missing' is not a Struct field"),
        ('"doc.1x"', "index field doc.1x: a path is 1 to 8 keys"),
        ('"doc.a-b"', "index field doc.a-b: a path is 1 to 8 keys"),
        ('"doc." ', "index field doc.: a path is 1 to 8 keys"),
        ('"doc.' + ".".join("k" * 9) + '"', "a path is 1 to 8 keys"),
    ],
)
def test_an_index_on_a_path_names_a_struct_and_keys_a_filter_can_name(
    tmp_path: Path, index: str, expected: str
) -> None:
    body = (
        "message Thing {\n"
        f"  option (repogate.options.v1.resource) = {{indexes: [{{fields: [{index}]}}]}};\n"
        "  string id = 1;\n  string nick = 2;\n  google.protobuf.Struct doc = 3;\n}\n"
    )
    assert expected in refusal(tmp_path, 'import "google/protobuf/struct.proto";\n' + body)


def test_a_nullable_field_may_be_sortable(tmp_path: Path) -> None:
    directory, package = write(
        tmp_path,
        f"message Thing {{\n  {RESOURCE}"
        "  optional google.protobuf.Timestamp due_time = 2\n"
        "    [(repogate.options.v1.field).sortable = true];\n"
        "}\n",
    )
    declared = declare(load(directory))
    bind(declared)
    table = declared.tables[f"{package}.Thing"]
    assert table.c.due_time.nullable
    assert "due_time" in declared.resources[f"{package}.Thing"].repository.entity.sortable
