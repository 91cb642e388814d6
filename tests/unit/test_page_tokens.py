"""Page tokens: opaque, signed, bound to their query."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from repositories.errors import InvalidArgument
from server.page_tokens import PageTokens
from tests.unit.support import assert_invalid

pytestmark = pytest.mark.unit

SECRET = "s3cret-for-tests"
QUERY = "user|acme"
POSITION = ["2031-05-17T08:30:00.000001+00:00", "0b6e4d8c-6a0f-4a7e-9c55-0d3b8b0f9a11"]
URL_SAFE = re.compile(r"[A-Za-z0-9_\-.]+")


@pytest.fixture
def tokens() -> PageTokens:
    return PageTokens(SECRET)


def _rejects(tokens: PageTokens, token: str, query: str = QUERY) -> None:
    with pytest.raises(InvalidArgument) as err:
        tokens.decode(token, query)
    assert_invalid(err.value, "page_token", reason="INVALID_PAGE_TOKEN")
    # One message for every failure: the client learns nothing about which check failed.
    assert err.value.message == (
        "invalid page_token: is not a token this server issued for this query"
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _flip(text: str, index: int) -> str:
    """`text` with one base64 character replaced by another valid one."""
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


@pytest.mark.parametrize(
    "position",
    [POSITION, [], [1, 2.5, None, True], ["ünïcödé", "a.b", "x/y+z="], [["nested"], {"k": 1}]],
)
def test_round_trip(tokens: PageTokens, position: list[Any]) -> None:
    token = tokens.encode(position, QUERY)
    assert tokens.decode(token, QUERY) == position
    # The same secret in another instance (another replica) decodes it too.
    assert PageTokens(SECRET).decode(token, QUERY) == position


def test_token_is_url_safe_and_opaque(tokens: PageTokens) -> None:
    produced = [tokens.encode([i, "?>~" * i, POSITION], f"q{i}") for i in range(64)]
    for token in produced:
        assert URL_SAFE.fullmatch(token), token
        assert token.count(".") == 1
        assert "=" not in token
        assert POSITION[1] not in token
    assert len(set(produced)) == len(produced)
    # The check above is only meaningful if the payloads needed the two characters
    # where URL-safe base64 differs from the standard alphabet ("+" and "/").
    joined = "".join(produced)
    assert "-" in joined
    assert "_" in joined


def test_tampered_body(tokens: PageTokens) -> None:
    token = tokens.encode(POSITION, QUERY)
    body, sig = token.split(".")
    for index in (0, len(body) // 2, len(body) - 2):
        _rejects(tokens, f"{_flip(body, index)}.{sig}")


def test_body_edited_to_another_valid_position_is_rejected(tokens: PageTokens) -> None:
    token = tokens.encode(POSITION, QUERY)
    body, sig = token.split(".")
    digest, _ = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = _b64(json.dumps([digest, ["1970-01-01T00:00:00+00:00", POSITION[1]]]).encode())
    _rejects(tokens, f"{forged}.{sig}")


def test_tampered_signature(tokens: PageTokens) -> None:
    token = tokens.encode(POSITION, QUERY)
    body, sig = token.split(".")
    for index in (0, len(sig) // 2, len(sig) - 2):
        _rejects(tokens, f"{body}.{_flip(sig, index)}")
    _rejects(tokens, f"{body}.{sig[:-2]}")
    _rejects(tokens, f"{body}.{sig}{sig}")


@pytest.mark.parametrize("keep", [1, 5, -1, -4, -12])
def test_truncated(tokens: PageTokens, keep: int) -> None:
    token = tokens.encode(POSITION, QUERY)
    _rejects(tokens, token[:keep])


def test_token_of_another_query(tokens: PageTokens) -> None:
    token = tokens.encode(POSITION, QUERY)
    for other in ("user|acme2", "user|ACME", "group|acme", "", QUERY + " "):
        _rejects(tokens, token, other)
    # And the other way round: the other query's token is not ours.
    _rejects(tokens, tokens.encode(POSITION, "user|other"))


def test_token_signed_with_another_secret(tokens: PageTokens) -> None:
    for secret in ("another-secret", SECRET + "x", ""):
        _rejects(tokens, PageTokens(secret).encode(POSITION, QUERY))


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "..",
        "abc.",
        ".abc",
        "a.b.c",
        "no-dot-at-all",
        "!!!.???",
        "é.é",
        "a.b",
        "%%%%.%%%%",
        "\x00.\x00",
        " " + "A" * 20 + "." + "A" * 20,
    ],
)
def test_garbage(tokens: PageTokens, token: str) -> None:
    _rejects(tokens, token)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"\xff\xfe\x00",
        b"5",
        b'"ab"',
        b"[1, 2, 3]",
        b"{}",
        b"null",
    ],
)
def test_validly_signed_but_malformed_payload(tokens: PageTokens, payload: bytes) -> None:
    # Only the server can sign, but a malformed payload must still fail cleanly.
    _rejects(tokens, f"{_b64(payload)}.{_b64(tokens._sign(payload))}")


def test_validly_signed_position_that_is_not_a_list(tokens: PageTokens) -> None:
    digest = tokens._digest(QUERY)
    for position in ({"a": 1}, "2031-01-01", 7, None):
        payload = json.dumps([digest, position]).encode()
        _rejects(tokens, f"{_b64(payload)}.{_b64(tokens._sign(payload))}")
