"""The Redis glob translator: Redis's own matching rules, byte for byte.

The integration tests check the same patterns (and random ones) against a real
Redis; these pin down the rules themselves.
"""

from __future__ import annotations

import pytest

from server.cache.glob import compile_glob, escape

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("*", "", True),
        ("*", "any:thing", True),
        ("a*", "abc", True),
        ("a*", "ba", False),
        ("*c", "abc", True),
        ("a*c", "ac", True),
        ("a**c", "abbc", True),
        ("?", "a", True),
        ("?", "", False),
        ("?", "ab", False),
        # `?` and sets take one byte, and é is two in UTF-8.
        ("?", "é", False),
        ("??", "é", True),
        ("[abc]", "b", True),
        ("[abc]", "d", False),
        ("[^abc]", "d", True),
        ("[^abc]", "a", False),
        ("[a-c]", "b", True),
        ("[c-a]", "b", True),  # a reversed range is swapped
        ("[a-c]", "-", False),
        ("[\\]]", "]", True),
        ("[\\-]", "-", True),
        ("[a\\-z]", "m", False),
        ("[a\\-z]", "z", True),
        # `]` first closes an empty set, which matches nothing.
        ("[]a]", "]a]", False),
        ("[]a]", "a]", False),
        # `[a-]` is a range from `a` to `]` (swapped), and the set is never closed.
        ("[a-]", "^", True),
        ("[a-]", "-", False),
        # An unclosed set takes the rest of the pattern as its members.
        ("[abc", "c", True),
        ("[abc", "cd", False),
        ("[", "[", False),
        ("[^", "x", True),
        ("[\\", "\\", True),
        ("\\*", "*", True),
        ("\\*", "a", False),
        ("\\?", "?", True),
        ("\\[a]", "[a]", True),
        ("\\a", "a", True),
        # A lone backslash at the end is a literal backslash.
        ("a\\", "a\\", True),
        ("a\\", "a", False),
        ("*:*", "x:y", True),
        ("*:*", "xy", False),
        ("a\nb", "a\nb", True),
        ("a?b", "a\nb", True),
        ("*", "a\nb", True),
    ],
)
def test_redis_glob_rules(pattern: str, key: str, matches: bool) -> None:
    assert compile_glob(pattern).matches(key) is matches


def test_many_stars_against_a_long_near_miss_stay_fast() -> None:
    # A naive `.*` translation backtracks for ages here; the atomic groups do not.
    pattern = "*a" * 200 + "*b"
    assert not compile_glob(pattern).matches("a" * 2000)
    assert compile_glob(pattern).matches("a" * 2000 + "b")


@pytest.mark.parametrize(
    "text", ["plain", "*", "?", "[a-z]", "[^]", "\\", "a\\*b", "*:*", "x]y", "é[é]", "[\\"]
)
def test_escape_matches_exactly_itself(text: str) -> None:
    glob = compile_glob(escape(text))
    assert glob.matches(text)
    assert not glob.matches(text + "x")
    assert not glob.problems


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("abc\\", "lone"),
        ("[abc", "without its ']'"),
        ("a[\\]", "without its ']'"),
        ("[é]", "non-ASCII"),
        ("[a-é]", "non-ASCII"),
    ],
)
def test_problems_a_client_pattern_is_refused_for(pattern: str, problem: str) -> None:
    problems = compile_glob(pattern).problems
    assert problems
    assert problem in problems[0]


@pytest.mark.parametrize("pattern", ["*", "a\\\\", "\\*", "[a-z]*", "[^:]", "é*", "[\\]]", "?*"])
def test_ordinary_patterns_have_no_problems(pattern: str) -> None:
    assert compile_glob(pattern).problems == ()
