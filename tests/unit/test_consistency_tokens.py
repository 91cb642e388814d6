"""Consistency tokens: a position signed for one tenant with the fleet's secret, refused
(INVALID_ARGUMENT, AIP-193) when edited, cut, another tenant's or another fleet's."""

from __future__ import annotations

import pytest

from repositories import b64url
from repositories.errors import InvalidArgument
from server.consistency import KEY, Tokens

pytestmark = pytest.mark.unit

SECRET = "a-secret-every-process-shares"


def test_a_token_carries_its_position_to_any_process_of_the_fleet() -> None:
    token = Tokens(SECRET).mint(0x3_0000_0A28, "acme")

    assert Tokens(SECRET).position(token, "acme") == 0x3_0000_0A28


@pytest.mark.parametrize(
    "forge",
    [
        # A position ahead of the one signed: its reads would all go to the primary.
        lambda t: b64url.encode((2**40).to_bytes(8, "big")) + "." + t.split(".")[1],
        lambda t: t[:-2],
        lambda t: t.split(".")[0],
        lambda t: t + ".x",
        lambda t: "!" + t,
        lambda t: "",
        lambda t: Tokens("another-fleet's-secret").mint(5, "acme"),
    ],
)
def test_a_forged_or_garbled_token_is_refused(forge) -> None:  # type: ignore[no-untyped-def]
    tokens = Tokens(SECRET)

    with pytest.raises(InvalidArgument) as refused:
        tokens.position(forge(tokens.mint(5, "acme")), "acme")

    assert refused.value.reason == "INVALID_CONSISTENCY_TOKEN"
    assert [v.field for v in refused.value.violations] == [KEY]


def test_a_token_is_its_tenants_only() -> None:
    tokens = Tokens(SECRET)

    with pytest.raises(InvalidArgument):
        tokens.position(tokens.mint(5, "acme"), "acme2")
