"""Redis glob patterns as Python regexes, so the memory backend matches what SCAN matches.

This follows Redis's stringmatchlen() (src/util.c) byte for byte: patterns and
keys are compared as UTF-8 bytes (`?` is one byte, not one character); `\\`
makes the next byte literal, and a lone `\\` at the end is itself literal;
`[` opens a set that `]` closes, where `\\` escapes, `a-z` is a range (its ends
swapped if reversed, compared as C `char`, which is signed on x86-64), and a
leading `^` negates; a set left open takes the rest of the pattern as members.

A pattern is a run of single-byte matchers between stars, so it compiles to
one regex in which every segment between two stars is an atomic group: the
earliest place a segment fits is always the right one, and nothing is ever
retried. That keeps matching linear where a plain `.*` translation of
`*a*a*a*...` would backtrack for ages (Redis avoids the same trap with its
skipLongerMatches flag).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_STAR, _QUESTION, _OPEN, _CLOSE, _ESCAPE, _NEGATE, _RANGE = b"*?[]\\^-"
_ALL = frozenset(range(256))
# None stands for a star; a frozenset for the bytes one position may hold.
Token = frozenset[int] | None


@dataclass(frozen=True)
class Glob:
    """A compiled Redis glob, and what a client might not have meant by it."""

    pattern: str
    regex: re.Pattern[bytes]
    # Reasons a client-supplied pattern is refused (see problems()); empty if none.
    problems: tuple[str, ...]

    def matches(self, key: str) -> bool:
        return self.regex.match(key.encode()) is not None


@functools.lru_cache(maxsize=512)
def compile_glob(pattern: str) -> Glob:
    tokens, problems = _tokenize(pattern.encode())
    return Glob(pattern, re.compile(_regex(tokens), re.DOTALL), tuple(problems))


def escape(text: str) -> str:
    """`text` as a glob that matches exactly itself."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _signed(byte: int) -> int:
    return byte - 256 if byte >= 128 else byte


def _tokenize(p: bytes) -> tuple[list[Token], list[str]]:
    tokens: list[Token] = []
    problems: list[str] = []
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == _STAR:
            tokens.append(None)
            i += 1
        elif c == _QUESTION:
            tokens.append(_ALL)
            i += 1
        elif c == _OPEN:
            members, i = _bracket(p, i + 1, problems)
            tokens.append(members)
        elif c == _ESCAPE and i + 1 < n:
            tokens.append(frozenset({p[i + 1]}))
            i += 2
        else:
            if c == _ESCAPE:
                problems.append("ends in a lone '\\'; write '\\\\' for a backslash")
            tokens.append(frozenset({c}))
            i += 1
    return tokens, problems


def _bracket(p: bytes, i: int, problems: list[str]) -> tuple[frozenset[int], int]:
    """The set opened by the `[` before p[i], and the index just past it."""
    n = len(p)
    negate = i < n and p[i] == _NEGATE
    i += negate
    members: set[int] = set()
    named: set[int] = set()  # bytes written inside the brackets
    while True:
        left = n - i
        if left >= 2 and p[i] == _ESCAPE:
            members.add(p[i + 1])
            i += 1
        elif left and p[i] == _CLOSE:
            break
        elif not left:
            problems.append("has a '[' without its ']'")
            i -= 1  # Redis steps back here and past again below: the set ends the pattern.
            break
        elif left >= 3 and p[i + 1] == _RANGE:
            low, high = sorted((_signed(p[i]), _signed(p[i + 2])))
            members.update(b for b in _ALL if low <= _signed(b) <= high)
            named.update((p[i], p[i + 2]))
            i += 2
        else:
            members.add(p[i])
        named.add(p[i])
        i += 1
    if max(named, default=0) > 127:
        # A set matches one byte, and a non-ASCII character is several.
        problems.append("has a non-ASCII character inside '[...]'")
    return frozenset(_ALL - members if negate else members), i + 1


def _regex(tokens: list[Token]) -> bytes:
    """\\A seg0 (?>.*?seg1) ... .*segN \\Z, with each segment a run of byte classes."""
    segments: list[bytes] = [b""]
    for token in tokens:
        if token is None:
            segments.append(b"")
        else:
            segments[-1] += _byte_class(token)
    if len(segments) == 1:
        return rb"\A" + segments[0] + rb"\Z"
    middle = b"".join(rb"(?>.*?" + s + b")" for s in segments[1:-1] if s)
    return rb"\A" + segments[0] + middle + b".*" + segments[-1] + rb"\Z"


def _byte_class(members: frozenset[int]) -> bytes:
    if not members:
        return b"(?!)"
    if members == _ALL:
        return b"."
    runs: list[bytes] = []
    ordered = sorted(members)
    start = prev = ordered[0]
    for b in [*ordered[1:], -1]:
        if b != prev + 1:
            runs.append(b"\\x%02x" % start if start == prev else b"\\x%02x-\\x%02x" % (start, prev))
            start = b
        prev = b
    return b"[" + b"".join(runs) + b"]"
