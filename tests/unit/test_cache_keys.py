"""Cache keys: every tenant's keys sit under its own prefix, and no client pattern
reaches past it."""

from __future__ import annotations

import uuid

import pytest

from repositories.errors import InvalidArgument
from server.cache import keys
from server.cache.glob import compile_glob

pytestmark = pytest.mark.unit

TENANT = "acme"
# Tenants whose prefixes come closest to acme's.
NEIGHBOURS = ["acm", "acmex", "acme.", "xacme", "ACME", "acme-1", "a"]
ADVERSARIAL_PATTERNS = [
    "*",
    "?*",
    "*?",
    "[a-z]*",
    "\\*",
    "*:*",
    ":*",
    "*\\:*",
    "[^a]*",
    "[:]*",
    "**",
    "\\",
    "[",
    "[*",
    "[^",
    "]*",
    "acme:*",
    "*acme*",
]
KEYS = ["k", "a:b", "*", "?", "[", "]", "\\", ":", "acme:k", "x y", "é"]


def test_client_keys_sit_under_the_tenant_prefix() -> None:
    assert keys.client_prefix(TENANT) == "rg:v1:c:acme:"
    assert keys.client_key(TENANT, "a:b") == "rg:v1:c:acme:a:b"
    assert keys.client_key("A.b_c-9", "*") == "rg:v1:c:A.b_c-9:*"


def test_client_pattern_is_the_escaped_prefix_then_the_pattern() -> None:
    assert keys.client_pattern(TENANT, "[a-z]*") == "rg:v1:c:acme:[a-z]*"


@pytest.mark.parametrize("pattern", ADVERSARIAL_PATTERNS)
def test_no_pattern_matches_another_tenants_key(pattern: str) -> None:
    glob = compile_glob(keys.client_pattern(TENANT, pattern))
    for other in NEIGHBOURS:
        for key in KEYS:
            assert not glob.matches(keys.client_key(other, key)), (other, key)
            assert not glob.matches(keys.entity_key("user", 1, other, key))
    for key in KEYS:
        assert not glob.matches(keys.entity_key("user", 1, TENANT, key))


def test_a_pattern_still_matches_the_tenants_own_keys() -> None:
    own = [keys.client_key(TENANT, key) for key in KEYS]
    assert all(compile_glob(keys.client_pattern(TENANT, "*")).matches(key) for key in own)
    colon = compile_glob(keys.client_pattern(TENANT, "*:*"))
    assert [key for key in KEYS if colon.matches(keys.client_key(TENANT, key))] == [
        "a:b",
        ":",
        "acme:k",
    ]


@pytest.mark.parametrize("tenant", ["", "a:b", "a*", "a b", "x" * 129, "a\\b", "[a]"])
def test_a_malformed_tenant_never_makes_a_key(tenant: str) -> None:
    with pytest.raises(InvalidArgument):
        keys.client_key(tenant, "k")
    with pytest.raises(InvalidArgument):
        keys.entity_key("user", 1, tenant, "k")


def test_entity_keys_name_entity_schema_version_tenant_and_id() -> None:
    id_ = uuid.UUID("0b1c6f0e-8f4f-4c59-9d7e-3c2b8f7a6e51")
    key = keys.entity_key("user", 3, TENANT, id_)
    assert key == f"rg:v1:e:user:3:acme:{id_}"
    glob = compile_glob(keys.entity_pattern("user", 3, TENANT))
    assert glob.matches(key)
    assert not glob.matches(keys.entity_key("user", 3, "acmex", id_))
    assert not glob.matches(keys.entity_key("user", 4, TENANT, id_))
    assert not glob.matches(keys.client_key(TENANT, "k"))


@pytest.mark.parametrize(("entity", "version"), [("User", 1), ("user:x", 1), ("", 1), ("user", -1)])
def test_entity_keys_refuse_odd_names_and_versions(entity: str, version: int) -> None:
    with pytest.raises(ValueError, match=r"entity|schema_version"):
        keys.entity_key(entity, version, TENANT, "k")
