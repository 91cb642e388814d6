"""Where every cache key lives: all of Repogate's keys start with `rg:v1:`.

Client keys (CacheService) are `rg:v1:c:{tenant}:{key}`. A tenant id holds
no `:` and no glob metacharacter (server/context.py), so one tenant's prefix
is never a prefix of another's, and a tenant's glob is its escaped prefix
followed by the client's pattern: a glob is matched left to right, so nothing
the client writes can reach back over the prefix.

Entity read-through keys are `rg:v1:e:{entity}:{schema_version}:{tenant}:{id}`:
bumping an entity's schema version orphans its old entries (they expire), and
`entity_pattern` finds one tenant's entries of one entity, or every tenant's.

In a Redis Cluster the tenant is written in braces, `rg:v1:c:{tenant}:{key}` and
`rg:v1:e:{entity}:{schema_version}:{tenant}:{id}` (`hash_tagged`): Redis hashes only
what is inside the first braces, so one tenant's keys share a slot and a command
over several of them (MGET, a MULTI, a script) goes to one node. Only a cluster
does this: the keys of a single Redis stay as they were, so processes of a fleet
mid-upgrade keep reading and invalidating the same keys.
"""

from __future__ import annotations

import re
import uuid

from server.cache.glob import escape
from server.context import validate_tenant

ROOT = "rg:v1:"
_ENTITY = re.compile(r"[a-z][a-z0-9_]*")
# What a tenant id may hold (server/context.py): never a brace, colon or glob character.
_TENANT = re.compile(r"[A-Za-z0-9._-]+")


def client_prefix(tenant: str) -> str:
    return f"{ROOT}c:{validate_tenant(tenant)}:"


def client_key(tenant: str, key: str) -> str:
    return client_prefix(tenant) + key


def client_pattern(tenant: str, pattern: str) -> str:
    """A glob over the tenant's keys: the escaped prefix, then the client's pattern."""
    return escape(client_prefix(tenant)) + pattern


def entity_key(entity: str, schema_version: int, tenant: str, id_: uuid.UUID | str) -> str:
    return f"{_entity_prefix(entity, schema_version, tenant)}{id_}"


def entity_pattern(entity: str, schema_version: int, tenant: str | None = None) -> str:
    """A glob for every cached `entity` of `tenant` (None: of every tenant) at
    `schema_version`."""
    if tenant is None:
        return escape(_table_prefix(entity, schema_version)) + "*"
    return escape(_entity_prefix(entity, schema_version, tenant)) + "*"


def every_entity_pattern() -> str:
    """A glob for every entity entry, whatever its entity, version and tenant."""
    return f"{ROOT}e:*"


def _entity_prefix(entity: str, schema_version: int, tenant: str) -> str:
    return f"{_table_prefix(entity, schema_version)}{validate_tenant(tenant)}:"


def _table_prefix(entity: str, schema_version: int) -> str:
    if not _ENTITY.fullmatch(entity):
        raise ValueError(f"entity names are lower_snake_case, not {entity!r}")
    if schema_version < 0:
        raise ValueError("schema_version must not be negative")
    return f"{ROOT}e:{entity}:{schema_version}:"


def hash_tagged(key: str) -> str:
    """`key` (or a glob) with its tenant in braces, for a Redis Cluster; a glob with
    no tenant in it (every tenant's entries) is left as it is."""
    start = _tenant_at(key)
    if start < 0:
        return key
    end = key.find(":", start)
    if end < 0 or not _TENANT.fullmatch(key[start:end]):
        return key
    return f"{key[:start]}{{{key[start:end]}}}{key[end:]}"


def untagged(key: str) -> str:
    """`key` as it reads outside a cluster: the inverse of `hash_tagged`."""
    start = _tenant_at(key)
    if start < 0 or key[start : start + 1] != "{":
        return key
    end = key.find("}", start)
    if end < 0:
        return key
    return key[:start] + key[start + 1 : end] + key[end + 1 :]


def _tenant_at(key: str) -> int:
    """Where the tenant starts in one of our keys or globs; -1 where it has none."""
    if key.startswith(f"{ROOT}c:"):
        return len(ROOT) + 2
    if key.startswith(f"{ROOT}e:"):
        # Past the entity and the schema version.
        entity_end = key.find(":", len(ROOT) + 2)
        version_end = key.find(":", entity_end + 1) if entity_end > 0 else -1
        return version_end + 1 if version_end > 0 else -1
    return -1
