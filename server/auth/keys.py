"""API keys, known by their SHA-256 digests only, each bound to tenants and scopes.

The keys file (REPOGATE_API_KEYS_FILE) is JSON, or TOML when its name ends in
.toml; whoever reads it learns no key:

    [keys.billing]                  # a name of your choosing
    sha256 = "5e884898da28..."      # printf %s "$KEY" | sha256sum
    tenants = ["acme", "globex"]    # or "*" for every tenant
    scopes = ["admin"]              # optional
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from repositories.errors import Unauthenticated
from server.auth.principal import SCOPES, Principal, parse_tenants

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    principal: Principal


class ApiKeys:
    def __init__(self, entries: list[_Entry], source: tuple[Path, bool] | None = None) -> None:
        self._entries = entries
        self._source = source  # the file and allow_any_tenant it was loaded with
        self.files = () if source is None else (source[0],)

    def reload(self) -> None:
        """Reads the keys file again; raises (keeping the keys it had) if it is not valid."""
        if self._source is not None:
            path, allow_any_tenant = self._source
            self._entries = ApiKeys.load(path, allow_any_tenant=allow_any_tenant)._entries

    @classmethod
    def load(cls, path: Path, *, allow_any_tenant: bool = True) -> ApiKeys:
        """Reads the keys file; ValueError saying what is wrong, never quoting a value.
        A key for every tenant ("*") is one unless `allow_any_tenant`."""
        try:
            text = path.read_text(encoding="utf-8")
            document = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from exc
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, dict) or not keys:
            raise ValueError(f"{path} needs a 'keys' table naming at least one key")
        entries = [_entry(str(name), spec, allow_any_tenant) for name, spec in keys.items()]
        if len({entry.digest for entry in entries}) != len(entries):
            raise ValueError(f"{path} lists one sha256 under two names")
        return cls(entries, (path, allow_any_tenant))

    def verify(self, key: str) -> Principal:
        """The key's principal; UNAUTHENTICATED if it is not one of ours."""
        digest = hashlib.sha256(key.encode()).digest()
        found: Principal | None = None
        for entry in self._entries:
            # Every digest is compared, each in constant time: how long this takes
            # says nothing about which key, or how much of one, was right.
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        if found is None:
            raise Unauthenticated("the API key is not valid", reason="CREDENTIALS_INVALID")
        return found


def _entry(name: str, spec: object, allow_any_tenant: bool) -> _Entry:
    where = f"keys.{name}"
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be a table with sha256, tenants and scopes")
    digest = spec.get("sha256")
    if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
        raise ValueError(f"{where}.sha256 must be the key's SHA-256 in 64 hex digits, not the key")
    scopes = spec.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s in SCOPES for s in scopes):
        raise ValueError(f"{where}.scopes may only list {sorted(SCOPES)}")
    try:
        tenants = parse_tenants(spec.get("tenants"), allow_any=allow_any_tenant)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    return _Entry(bytes.fromhex(digest), Principal(tenants, frozenset(scopes), f"key:{name}"))
