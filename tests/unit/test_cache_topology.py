"""Which Redis REPOGATE_REDIS_URL names, and the cluster's key form: one tenant's keys
share a hash tag, plain keys keep their form, and nothing above the backend sees it."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from server.cache import keys, topology
from server.cache.glob import compile_glob
from server.cache.memory import MemoryBackend
from server.cache.tagged import HashTagged
from server.cache.tenant import START, TenantCache
from server.settings import Settings

pytestmark = pytest.mark.unit


def test_cluster_and_sentinel_urls_are_parsed() -> None:
    found = topology.parse(
        "rediss+cluster://ann:s%40cret@10.0.0.1:7000,[::1]:7001?ssl_cert_reqs=none"
    )
    assert (found.kind, found.nodes) == (topology.Kind.CLUSTER, (("10.0.0.1", 7000), ("::1", 7001)))
    assert found.options["username"] == "ann"
    assert found.options["password"] == "s@cret"
    assert found.options["ssl"] is True
    assert "s@cret" not in repr(found)

    watched = topology.parse("redis+sentinel://a:26379,b:26379/cache/2")
    assert (watched.kind, watched.service, watched.options["db"]) == (
        topology.Kind.SENTINEL,
        "cache",
        2,
    )
    assert topology.parse("redis://localhost:6379/0").kind is topology.Kind.PLAIN


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://localhost", r"redis\+cluster://"),
        ("redis+cluster://localhost", "host:port"),
        ("redis+cluster://a:1/3", "no path"),
        ("redis+sentinel://a:1", "service"),
        ("redis+sentinel://a:1,b:x/s", "host:port"),
    ],
)
def test_settings_refuse_malformed_urls(url: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(redis_url=url)


def test_plain_keys_keep_their_form() -> None:
    assert keys.client_key("acme", "k") == "rg:v1:c:acme:k"
    assert keys.entity_key("users", 7, "acme", "id") == "rg:v1:e:users:7:acme:id"


@pytest.mark.parametrize(
    "key",
    [
        keys.client_key("acme", "a{b}:c"),
        keys.client_key("a.b-c_D", "{x}"),
        keys.entity_key("users", 7, "acme", uuid.UUID(int=5)),
    ],
)
def test_a_tenant_key_is_tagged_with_its_tenant_and_back(key: str) -> None:
    tagged = keys.hash_tagged(key)
    tenant = tagged[tagged.index("{") + 1 : tagged.index("}")]
    assert tenant in ("acme", "a.b-c_D")
    assert keys.untagged(tagged) == key


def test_globs_over_one_tenant_are_tagged_and_over_every_tenant_not() -> None:
    one = keys.hash_tagged(keys.entity_pattern("users", 7, "acme"))
    assert one == "rg:v1:e:users:7:{acme}:*"
    every = keys.hash_tagged(keys.entity_pattern("users", 7))
    assert every == keys.entity_pattern("users", 7)
    tagged_key = keys.hash_tagged(keys.entity_key("users", 7, "acme", "id"))
    assert compile_glob(one).matches(tagged_key)
    assert compile_glob(every).matches(tagged_key)
    assert compile_glob(keys.every_entity_pattern()).matches(tagged_key)


async def test_a_tagged_backend_looks_the_same_to_a_tenant() -> None:
    memory = MemoryBackend()
    cache = TenantCache(HashTagged(memory), "acme")
    await cache.set_many([(f"k{i}", b"v") for i in range(5)], 60)
    await cache.set("{odd}", b"v", 60)
    page, _ = await cache.page("*", START, 100)
    assert sorted(page) == sorted([f"k{i}" for i in range(5)] + ["{odd}"])
    assert await cache.invalidate("k*") == 5
    # Underneath, every key carries the tenant's tag.
    stored, _ = await memory.scan("*", "", 100)
    assert stored == ["rg:v1:c:{acme}:{odd}"]
