"""REPOGATE_EXTENSIONS names modules by import path or by file path."""

from __future__ import annotations

from pathlib import Path

import pytest

from schema import extensions
from schema.model import SchemaError

MODULE = """
from schema.extensions import Extensions

extensions = Extensions()
LOADS = globals().get("LOADS", 0) + 1


@extensions.method("acme.v1.ThingService/Poke")
def poke(api):
    async def run(request, context):
        return request

    return run
"""


def test_a_python_file_is_loaded_by_its_path_once(tmp_path: Path) -> None:
    path = tmp_path / "pokes.py"
    path.write_text(MODULE)
    first = extensions.load([str(path)])
    again = extensions.load([str(path)])
    assert list(first) == ["acme.v1.ThingService/Poke"]
    # The same registry: the file ran once, however often it is named.
    assert again["acme.v1.ThingService/Poke"] is first["acme.v1.ThingService/Poke"]


def test_a_missing_file_is_a_schema_error_naming_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.py")
    with pytest.raises(SchemaError, match=r"nowhere\.py"):
        extensions.load([missing])


def test_a_file_without_a_registry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    with pytest.raises(SchemaError, match="has no `extensions = Extensions\\(\\)`"):
        extensions.load([str(path)])


def test_a_file_that_does_not_parse_is_a_schema_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("def poke(:\n")
    with pytest.raises(SchemaError, match=r"broken\.py"):
        extensions.load([str(path)])
