"""How an id is written: a UUID as 8-4-4-4-12 hex digits, in either case.

uuid.UUID() also reads braces, a `urn:uuid:` prefix and 32 bare digits; those
spellings are refused wherever an id is read (request fields, references,
request ids, filters), so that one resource has one id as text, up to case.
Case is folded, as RFC 9562 (hex digits are case-insensitive on input) and
AIP-202's UUID4 format (the value may be normalised to lower case) allow;
Repogate answers in lower case.
"""

from __future__ import annotations

import re
import uuid

_FORM = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


def parse_uuid(text: str) -> uuid.UUID:
    """The UUID `text` writes as 8-4-4-4-12 hex digits; ValueError for any other form."""
    if not _FORM.fullmatch(text):
        raise ValueError("not a UUID written as 8-4-4-4-12 hex digits")
    return uuid.UUID(text)


def problem(text: str) -> str:
    """Why `text` is not an id, as a field violation's description."""
    try:
        uuid.UUID(text)
    except ValueError:
        return "must be a UUID"
    return "must be a UUID written as 8-4-4-4-12 hex digits, without braces or a prefix"
