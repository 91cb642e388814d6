"""A server that neither migrates nor uses TLS or JWTs does not load what only those need:
Alembic, PyJWT and cryptography add over 20 MiB to every worker's RSS; nor, without
declared resources, protovalidate and its pure-Python protobuf runtime (12 MiB)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PROBE = """
import json, sys
import server.app, server.cli
from server.settings import Settings
settings = Settings(auth_mode="keys", api_keys_file=sys.argv[1])
server.app.auth.authenticator(settings)
print(json.dumps(sorted(sys.modules)))
"""


def test_serving_without_migrations_tls_jwt_or_declared_rules_loads_none_of_their_libraries(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys.json"
    digest = hashlib.sha256(b"a key").hexdigest()
    keys.write_text(json.dumps({"keys": {"app": {"sha256": digest, "tenants": ["t"]}}}))
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(keys)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    heavy = {
        "alembic",
        "jwt",
        "cryptography.x509",
        "cryptography.hazmat.bindings",
        "protovalidate",
        "protobuf",
    }
    assert loaded & heavy == set()
    assert "server.app" in loaded  # the probe ran what a server imports
