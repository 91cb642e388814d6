"""The values a filter's text holds, read from its tokens, and the error every part
of filter compilation raises."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal as Kind

import lark

from repositories.errors import InvalidArgument


def error(description: str) -> InvalidArgument:
    """INVALID_ARGUMENT with a BadRequest on `filter`, reason INVALID_FILTER."""
    return InvalidArgument.field("filter", description, reason="INVALID_FILTER")


def column(token: lark.Token) -> int:
    """The 1-based character position of `token` in the whole filter text."""
    return (token.start_pos or 0) + 1


def quote(token: lark.Token) -> str:
    value = str(token)
    return json.dumps(value if len(value) <= 20 else value[:20] + "...")


@dataclass(frozen=True)
class Literal:
    """A value of a restriction. kind "any" is AIP-160's bare `*` (`tags:*`)."""

    kind: Kind["string", "int", "float", "bool", "null", "any"]
    # Strings: the text between wildcards (one segment when there are none).
    value: tuple[str, ...] | int | float | bool | None
    column: int

    @property
    def segments(self) -> tuple[str, ...]:
        assert isinstance(self.value, tuple)
        return self.value

    @property
    def text(self) -> str:
        return "*".join(self.segments)

    @property
    def wildcard(self) -> bool:
        return self.kind == "string" and len(self.segments) > 1


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}


def literal(token: lark.Token) -> Literal:
    at = column(token)
    if token.type == "STRING":
        return Literal("string", _unquote(str(token), at), at)
    if token.type == "NUMBER":
        return _number(str(token), at)
    if token.type in ("TRUE", "FALSE"):
        return Literal("bool", token.type == "TRUE", at)
    if token.type == "STAR":
        return Literal("any", None, at)
    return Literal("null", None, at)


def _unquote(raw: str, at: int) -> tuple[str, ...]:
    """Splits a quoted string at its unescaped `*`s, resolving backslash escapes."""
    segments: list[str] = []
    current: list[str] = []
    chars = iter(enumerate(raw[1:-1], start=at + 1))
    for position, char in chars:
        if char == "*":
            segments.append("".join(current))
            current = []
        elif char == "\\":
            position, escaped = next(chars)
            if escaped == "*":
                current.append("*")
            elif escaped in _ESCAPES:
                current.append(_ESCAPES[escaped])
            else:
                raise error(f"unknown escape \\{escaped} at column {position - 1}")
        else:
            current.append(char)
    segments.append("".join(current))
    return tuple(segments)


def _number(raw: str, at: int) -> Literal:
    if any(mark in raw for mark in ".eE"):
        value = float(raw)
        if not math.isfinite(value):
            raise error(f"number {raw} at column {at} is out of range")
        return Literal("float", value, at)
    return Literal("int", int(raw), at)


INT64 = 2**63


def double(lit: Literal) -> float:
    """A number literal as a double, what a Struct holds."""
    try:
        return float(lit.value)  # type: ignore[arg-type]
    except OverflowError:
        raise error(f"the number at column {lit.column} is out of range") from None


def json_number(lit: Literal) -> int | float:
    """A number literal as a JSON array element compares: an integer while a BIGINT
    holds it (both databases compare those exactly), else a double."""
    value = lit.value
    if isinstance(value, int) and not isinstance(value, bool) and -INT64 <= value < INT64:
        return value
    return double(lit)


_FRACTION = re.compile(r"\.([0-9]+)")


def timestamp(text: str) -> datetime | None:
    """An aware UTC datetime from RFC 3339 text, or None if it is not one."""
    if len(text) < 20 or text[10] not in "Tt" or text[4] != "-":
        return None
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    fraction = _FRACTION.match(text, 19)
    if fraction and fraction.group(1)[6:].strip("0"):
        # Stored times have microseconds; fromisoformat would silently drop the rest.
        return None
    try:
        value = datetime.fromisoformat(text[:10] + "T" + text[11:])
        if value.tzinfo is None:
            return None
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
