"""CacheService field checks: INVALID_ARGUMENT naming the field at fault."""

from __future__ import annotations

import pytest
from google.protobuf.duration_pb2 import Duration

from repogate.v1 import cache_pb2 as pb
from repositories.errors import InvalidArgument
from server.cache import checks
from server.cache.checks import Limits
from tests.unit.support import assert_invalid

pytestmark = pytest.mark.unit

LIMITS = Limits(max_value_bytes=8, max_ttl=100)


@pytest.mark.parametrize("key", ["k", "a:b", "x y", "*?[]\\", "é" * 256, "k" * 512])
def test_valid_keys(key: str) -> None:
    assert checks.key(key, "key") == key


@pytest.mark.parametrize("key", ["", "k" * 513, "é" * 257, "a\nb", "a\x00b", "\t", "a\u2028b"])
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        checks.key(key, "key")
    assert_invalid(err.value, "key")


@pytest.mark.parametrize(
    ("keys", "field"),
    [
        ([], "keys"),
        (["k"] * 1001, "keys"),
        (["a", "", "b"], "keys[1]"),
        (["a", "b", "a"], "keys[2]"),
    ],
)
def test_key_batches_name_the_item_at_fault(keys: list[str], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        checks.keys(keys, "keys")
    assert_invalid(err.value, field)


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ([("a", b""), ("", b"")], "entries[1].key"),
        ([("a", b""), ("b", b"123456789")], "entries[1].value"),
        ([("a", b""), ("b", b""), ("a", b"")], "entries[2].key"),
    ],
)
def test_entry_batches_name_the_item_at_fault(entries: list[tuple[str, bytes]], field: str) -> None:
    items = [pb.CacheEntry(key=k, value=v) for k, v in entries]
    with pytest.raises(InvalidArgument) as err:
        checks.entries(items, "entries", LIMITS)
    assert_invalid(err.value, field)


def test_values_up_to_the_limit() -> None:
    assert checks.value(b"12345678", "value", LIMITS) == b"12345678"
    with pytest.raises(InvalidArgument) as err:
        checks.value(b"123456789", "value", LIMITS)
    assert_invalid(err.value, "value")


def test_ttl_unset_or_zero_is_the_longest() -> None:
    assert checks.ttl(pb.SetRequest(), "ttl", LIMITS) == 100.0
    assert checks.ttl(pb.SetRequest(ttl=Duration()), "ttl", LIMITS) == 100.0
    assert (
        checks.ttl(pb.SetRequest(ttl=Duration(seconds=1, nanos=500_000_000)), "ttl", LIMITS) == 1.5
    )
    assert checks.ttl(pb.SetRequest(ttl=Duration(seconds=100)), "ttl", LIMITS) == 100.0


def test_a_required_ttl_must_be_set_and_zero_means_now() -> None:
    with pytest.raises(InvalidArgument) as err:
        checks.ttl(pb.ExpireRequest(), "ttl", LIMITS, required=True)
    assert_invalid(err.value, "ttl")
    assert checks.ttl(pb.ExpireRequest(ttl=Duration()), "ttl", LIMITS, required=True) == 0.0


@pytest.mark.parametrize(
    "duration",
    [
        Duration(seconds=-1),
        Duration(nanos=-1),
        Duration(seconds=100, nanos=1),
        Duration(seconds=101),
        Duration(nanos=1_000_000_000),
    ],
)
def test_invalid_ttls(duration: Duration) -> None:
    with pytest.raises(InvalidArgument) as err:
        checks.ttl(pb.SetRequest(ttl=duration), "ttl", LIMITS)
    assert_invalid(err.value, "ttl")


def test_patterns() -> None:
    assert checks.pattern("", "pattern", required=False) == "*"
    assert checks.pattern("a*", "pattern", required=True) == "a*"
    assert checks.pattern("*" * 1024, "pattern", required=True)


@pytest.mark.parametrize("pattern", ["", "*" * 1025, "a\nb", "a\\", "[ab", "[é]"])
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        checks.pattern(pattern, "pattern", required=True)
    assert_invalid(err.value, "pattern")
