"""Related fields (`(repogate.options.v1.field).related`) are checked at load: a wrong one
is a SchemaError naming the field; a right one is no column and no mapped field."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from repogate.v1 import session_pb2
from schema.declared import declare
from schema.loading import load
from schema.model import SchemaError, resource_spec
from schema.shapes import bind

pytestmark = pytest.mark.unit

HEADER = """syntax = "proto3";
package {package};
import "repogate/options/v1/options.proto";

message Parent {{
  option (repogate.options.v1.resource) = {{}};
  string id = 1;
  string name = 2 [(repogate.options.v1.field).sortable = true];
{parent}
}}

message Child {{
  option (repogate.options.v1.resource) = {{}};
  string id = 1;
  string parent_id = 2 [(repogate.options.v1.field).reference.resource = "Parent"];
  string other_id = 3 [(repogate.options.v1.field).reference.resource = "Child"];
  int32 rank = 4 [(repogate.options.v1.field).sortable = true];
  string note = 5;
{child}
}}

message Plain {{
  string id = 1;
}}
"""
CHILDREN = "  repeated Child children = 10 [(repogate.options.v1.field).related = {{{}}}];"
PARENT = "  Parent parent = 10 [(repogate.options.v1.field).related = {{{}}}];"


def load_schema(tmp_path: Path, parent: str = "", child: str = "") -> Path:
    """A schema of Parent and Child with the given extra fields, in a package of its own
    (the process's descriptor pool keeps every file loaded)."""
    package = f"rel{uuid.uuid4().hex[:10]}.v1"
    directory = tmp_path / "schema"
    directory.mkdir()
    body = HEADER.format(package=package, parent=parent, child=child)
    (directory / f"{package.replace('.', '_')}.proto").write_text(body)
    return directory


def refusal(tmp_path: Path, parent: str = "", child: str = "") -> str:
    with pytest.raises(SchemaError) as error:
        bind(declare(load(load_schema(tmp_path, parent, child))))
    return str(error.value)


@pytest.mark.parametrize(
    ("parent", "child", "expected"),
    [
        (
            CHILDREN.format('via: "other_id"'),
            "",
            "Parent.children: via 'other_id' is no reference field of Child to Parent",
        ),
        (
            CHILDREN.format('via: "note"'),
            "",
            "Parent.children: via 'note' is no reference field of Child to Parent",
        ),
        (
            "",
            PARENT.format('via: "other_id"'),
            "Child.parent: via 'other_id' is no reference field of Child to Parent",
        ),
        (
            "",
            PARENT.format('via: "parent_id" limit: 3'),
            "Child.parent: limit, order_by and truncated apply to children",
        ),
        (
            '  repeated Plain plains = 10 [(repogate.options.v1.field).related.via = "id"];',
            "",
            "Parent.plains: a related field's type must be a resource of this schema",
        ),
        (
            CHILDREN.format('via: "parent_id" limit: 1001'),
            "",
            "Parent.children: limit 1001 is not between 1 and 1000",
        ),
        (
            CHILDREN.format('via: "parent_id" truncated: "name"'),
            "",
            "Parent.children: truncated 'name' must name a bool field of Parent with no options",
        ),
        (
            CHILDREN.format('via: "parent_id" truncated: "missing"'),
            "",
            "Parent.children: truncated 'missing' must name a bool field",
        ),
        (
            CHILDREN.format('via: "parent_id" order_by: "note"'),
            "",
            "Parent.children: order_by 'note': cannot sort by 'note'",
        ),
        (
            "  repeated Child children = 10 [(repogate.options.v1.field) = "
            '{related: {via: "parent_id"} filterable: true}];',
            "",
            "Parent.children: a related field takes no other option (filterable)",
        ),
        (
            CHILDREN.format('via: "parent_id" truncated: "more"')
            + "\n  repeated Child again = 11 [(repogate.options.v1.field).related = "
            + '{via: "parent_id" truncated: "more"}];\n  bool more = 12;',
            "",
            "Parent.again: truncated 'more' is children's flag already",
        ),
    ],
)
def test_a_wrong_related_field_is_named(
    tmp_path: Path, parent: str, child: str, expected: str
) -> None:
    assert expected in refusal(tmp_path, parent, child)


def test_a_related_field_is_no_column(tmp_path: Path) -> None:
    directory = load_schema(
        tmp_path,
        parent=CHILDREN.format('via: "parent_id" order_by: "rank desc" truncated: "more"')
        + "\n  bool more = 11;",
        child=PARENT.format('via: "parent_id"'),
    )
    declared = declare(load(directory))
    bind(declared)
    tables = {t.name: set(t.c.keys()) for t in declared.tables.values()}
    related = {
        spec.message.name: [(r.name, r.children, r.via, r.limit, r.truncated) for r in res.related]
        for name, res in declared.resources.items()
        for spec in [declared.spec(name)]
    }

    assert "children" not in tables["parents"]
    assert "more" not in tables["parents"]
    assert "parent" not in tables["childs"]  # the default plural: name + "s"
    assert related == {
        "Parent": [("children", True, "parent_id", 100, "more")],
        "Child": [("parent", False, "parent_id", 0, "")],
    }
    (children,) = declared.resources[declared.schema.resource("Parent").message.full_name].related
    assert [key.name for key in children.order] == ["rank", "id"]


def test_the_built_in_session_shows_its_messages() -> None:
    spec = resource_spec(session_pb2.Session.DESCRIPTOR)

    assert spec.unstored == {"messages", "more_messages"}
    assert not {"messages", "more_messages"} & {f.name for f in spec.fields}
