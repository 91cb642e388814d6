"""Field mask paths (server/field_paths.py): the syntax both masks read, and the JSON
operations an update's paths into a Struct make."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2

from repositories.errors import InvalidArgument
from server import field_paths
from server.field_paths import Path
from server.mapping import json_object
from server.updates import Edit, merged

pytestmark = pytest.mark.unit

FIELDS, STRUCTS = ("title", "payload"), ("payload",)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("title", ("title",)),
        ("payload.ui.font", ("payload", "ui", "font")),
        ("payload.`John Smith`", ("payload", "John Smith")),
        ("payload.`a.b`.c", ("payload", "a.b", "c")),
        ("payload.`*`", ("payload", "*")),
        ("payload.0", ("payload", "0")),
    ],
)
def test_paths_split_into_a_field_and_keys(text: str, segments: tuple[str, ...]) -> None:
    assert field_paths.split(text) == segments
    # Written back (as errors quote it), a path reads the same.
    assert field_paths.split(str(Path(segments[0], segments[1:]))) == segments


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "payload.",
        ".payload",
        "payload..x",
        "payload.`x",
        "payload.``",
        "a`b`",
        "payload.*",
    ],
)
def test_malformed_paths_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"path|'\*'"):
        field_paths.split(text)


def test_parse_names_the_mask_and_keeps_each_path_once() -> None:
    paths = field_paths.parse(["payload.a", "title", "payload.a"], FIELDS, STRUCTS, "read_mask")
    assert paths == [Path("payload", ("a",)), Path("title")]
    for bad in ("nope", "title.x", "payload." + ".".join(["k"] * 33)):
        with pytest.raises(InvalidArgument) as error:
            field_paths.parse([bad], FIELDS, STRUCTS, "read_mask")
        assert [v.field for v in error.value.violations] == ["read_mask"]


def test_a_path_and_a_path_inside_it_are_refused_together() -> None:
    fine = field_paths.parse(["payload.a", "payload.b.c", "payload.ab"], FIELDS, STRUCTS, "m")
    field_paths.refuse_nested(fine, "m")
    for mask in (["payload", "payload.a"], ["payload.a.b.c", "title", "payload.a"]):
        with pytest.raises(InvalidArgument, match="is inside"):
            field_paths.refuse_nested(field_paths.parse(mask, FIELDS, STRUCTS, "m"), "m")


def test_pick_keeps_the_keys_named_that_the_document_has() -> None:
    struct = struct_pb2.Struct()
    struct.update({"a": {"b": 1, "c": 2}, "d": [{"b": 3}], "e": "x"})
    picked = field_paths.pick(struct, [("a", "b"), ("d", "b"), ("e", "f"), ("missing",)])
    assert json_object(picked) == {"a": {"b": 1}}


def _merged(stored: Any, *edits: Edit) -> Any:
    return merged(stored, list(edits))


def test_edits_set_and_remove_keys_and_leave_the_rest() -> None:
    stored = {"a": {"b": 1, "c": 2}, "list": [1], "s": "x"}
    assert _merged(stored, Edit(("a", "b"), True, 9), Edit(("s",), False)) == {
        "a": {"b": 9, "c": 2},
        "list": [1],
    }
    # A missing or non-object value on the way becomes an object; a list is never indexed.
    assert _merged(stored, Edit(("list", "0"), True, 5), Edit(("new", "x"), True, None)) == {
        **stored,
        "list": {"0": 5},
        "new": {"x": None},
    }
    assert _merged(stored, Edit(("list", "0"), False)) == stored
    assert stored == {"a": {"b": 1, "c": 2}, "list": [1], "s": "x"}  # not changed in place
    assert _merged(None, Edit(("a",), False)) is None
    assert _merged(None, Edit(("a", "b"), True, 1)) == {"a": {"b": 1}}
