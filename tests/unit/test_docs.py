"""The README and docs/: every relative link reaches a file, every anchor a heading of it;
the settings table lists exactly the settings `Settings` reads; the README stays short;
the npm lock pins buf for every platform, so `npm ci` installs it anywhere."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from pydantic import AliasChoices

from server.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "deploy" / "README.md", *ROOT.glob("docs/*.md")])
README_MAX_LINES = 200

LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")


def _prose(text: str) -> Iterator[tuple[int, str]]:
    """Numbered lines outside fenced code."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link: its label
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file, repeats numbered as GitHub numbers them."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _prose(path.read_text()):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> Iterator[tuple[int, str]]:
    for number, line in _prose(path.read_text()):
        for match in LINK.finditer(INLINE_CODE.sub("``", line)):
            yield number, match.group(1)


def broken(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with each relative link of `page`, as `page:line: target: why`."""
    problems = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        where = f"{page.relative_to(root)}:{number}: {target}"
        path_part, _, anchor = target.partition("#")
        file = (page.parent / unquote(path_part)).resolve() if path_part else page
        name = file.relative_to(root).as_posix() if file.is_relative_to(root) else str(file)
        if not file.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{where}: no heading with anchor #{anchor} in {name}")
    return problems


def test_the_pages_are_found() -> None:
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    assert {"README.md", "docs/README.md", "docs/configuration.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert broken(page) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Repogate\n\n## Test it\n")
    (tmp_path / "docs" / "README.md").write_text("# Index\n")
    probe = tmp_path / "docs" / "probe.md"
    probe.write_text(
        "# Probe\n\n## A `code` heading, with punctuation!\n\n"
        "[ok](#a-code-heading-with-punctuation) [ok](README.md) [ok](../README.md#test-it)\n"
        "[bad](nowhere.md) [bad](#no-such-heading) [bad](../README.md#no-such-heading)\n"
        "`[skipped](inline.md)`\n```\n[skipped](fenced.md)\n```\n"
    )
    found = broken(probe, root=tmp_path)
    assert [problem.split(": ", 2)[1] for problem in found] == [
        "nowhere.md",
        "#no-such-heading",
        "../README.md#no-such-heading",
    ]


def test_slugs_follow_github() -> None:
    assert slug("Reading, grouping and upserting") == "reading-grouping-and-upserting"
    assert slug("`x-tenant-id` and CacheService") == "x-tenant-id-and-cacheservice"
    assert slug("Past one database server") == "past-one-database-server"


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES


def test_every_docs_page_is_in_the_index() -> None:
    index = {target.partition("#")[0] for _, target in links(ROOT / "docs" / "README.md")}
    pages = {page.name for page in ROOT.glob("docs/*.md")} - {"README.md"}
    assert pages - index == set()


def test_readme_defines_b_before_using_it() -> None:
    text = (ROOT / "README.md").read_text()
    assert "$B" in text
    assert text.index('B="') < text.index("$B")


def _variables() -> set[str]:
    """The environment variables `Settings` reads, one per field."""
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.add(str(alias.choices[0]))
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"REPOGATE_{name.upper()}")
    return names


def test_the_settings_table_lists_exactly_the_settings() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| `(REPOGATE_[A-Z0-9_]+)`", text, re.MULTILINE)
    assert len(rows) == len(set(rows)), "a setting has two rows"
    assert set(rows) == _variables()


def test_the_npm_lock_pins_every_platforms_buf() -> None:
    """`npm ci` refuses a lock that lacks an optional dependency's entry; each platform's
    buf binary package must be recorded, with its integrity, whatever platform wrote it."""
    for lock_path in (ROOT / "package-lock.json", ROOT / "clients/node/package-lock.json"):
        packages = json.loads(lock_path.read_text())["packages"]
        for name, entry in packages.items():
            for dependency in entry.get("optionalDependencies", {}):
                recorded = packages.get(f"node_modules/{dependency}") or packages.get(
                    f"{name}/node_modules/{dependency}"
                )
                assert recorded, f"{lock_path.name}: {name} needs {dependency}, not in the lock"
                assert recorded.get("integrity"), f"{lock_path.name}: {dependency} unpinned"
    buf = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    platforms = buf["node_modules/@bufbuild/buf"]["optionalDependencies"]
    assert "@bufbuild/buf-linux-x64" in platforms
    assert "@bufbuild/buf-darwin-arm64" in platforms
