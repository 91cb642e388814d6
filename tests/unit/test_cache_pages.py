"""Key listing pages: never more than page_size keys, even when a scan batch (as
Redis's SCAN may) brings more than was asked; the surplus waits in the position."""

from __future__ import annotations

import pytest

from repositories.errors import InvalidArgument
from server.cache.memory import MemoryBackend
from server.cache.tenant import START, Position, TenantCache, decode_position, encode_position
from server.page_tokens import PageTokens
from tests.unit.support import assert_invalid

pytestmark = pytest.mark.unit


class Overfull(MemoryBackend):
    """Scans return a few more keys than asked, like SCAN over chained buckets."""

    async def scan(self, pattern: str, cursor: str, count: int) -> tuple[list[str], str]:
        return await super().scan(pattern, cursor, count + 3)


class Sparse(MemoryBackend):
    """Scans return one key at most, like SCAN over a keyspace of other tenants."""

    async def scan(self, pattern: str, cursor: str, count: int) -> tuple[list[str], str]:
        return await super().scan(pattern, cursor, 1)


async def walk(cache: TenantCache, pattern: str, size: int) -> list[list[str]]:
    pages: list[list[str]] = []
    position: Position | None = START
    while position is not None:
        assert len(pages) < 1000, "the walk does not end"
        found, position = await cache.page(pattern, position, size)
        pages.append(found)
    return pages


async def seeded(backend: MemoryBackend, tenant: str, count: int) -> TenantCache:
    cache = TenantCache(backend, tenant)
    await cache.set_many([(f"k{i:02}", b"v") for i in range(count)], 60)
    await TenantCache(backend, tenant + "x").set("k00", b"theirs", 60)
    return cache


@pytest.mark.parametrize("kind", [MemoryBackend, Overfull, Sparse])
@pytest.mark.parametrize("size", [1, 4, 7, 50])
async def test_pages_hold_at_most_page_size_and_every_key_once(
    kind: type[MemoryBackend], size: int
) -> None:
    cache = await seeded(kind(), "acme", 23)
    pages = await walk(cache, "*", size)
    assert all(len(page) <= size for page in pages)
    listed = [key for page in pages for key in page]
    assert sorted(listed) == [f"k{i:02}" for i in range(23)]


async def test_a_sparse_scan_gives_short_pages_that_still_go_on() -> None:
    cache = await seeded(Sparse(), "acme", 40)
    found, position = await cache.page("*", START, 30)
    assert len(found) == 16  # one key per scan, 16 scans a page
    assert position is not None


async def test_surplus_keys_wait_in_the_position() -> None:
    cache = await seeded(Overfull(), "acme", 10)
    found, position = await cache.page("*", START, 2)
    assert found == ["k00", "k01"]
    # The memory backend's cursor is the last full key it returned.
    assert position == Position("rg:v1:c:acme:k04", ("k02", "k03", "k04"))
    found, position = await cache.page("*", position, 2)
    assert found == ["k02", "k03"]
    assert position == Position("rg:v1:c:acme:k04", ("k04",))


def test_positions_round_trip_through_page_tokens() -> None:
    tokens = PageTokens("s3cret-for-tests")
    for position in [Position("17"), Position(None, ("a", "b:c")), Position("0", ("*",))]:
        token = encode_position(tokens, position, "q")
        assert decode_position(tokens, token, "q") == position
    assert decode_position(tokens, "", "q") == START


@pytest.mark.parametrize("token", ["garbage", "a.b"])
def test_a_foreign_token_is_invalid(token: str) -> None:
    tokens = PageTokens("s3cret-for-tests")
    with pytest.raises(InvalidArgument) as err:
        decode_position(tokens, token, "q")
    assert_invalid(err.value, "page_token", "INVALID_PAGE_TOKEN")


def test_a_token_for_another_query_or_of_another_shape_is_invalid() -> None:
    tokens = PageTokens("s3cret-for-tests")
    token = encode_position(tokens, Position("5"), "cache|memory|acme|*")
    for query in ["cache|memory|acme|a*", "cache|redis|acme|*", "cache|memory|other|*"]:
        with pytest.raises(InvalidArgument):
            decode_position(tokens, token, query)
    odd = tokens.encode([5, ["a"]], "q")
    with pytest.raises(InvalidArgument) as err:
        decode_position(tokens, odd, "q")
    assert_invalid(err.value, "page_token", "INVALID_PAGE_TOKEN")
