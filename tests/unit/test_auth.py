"""Authentication's pure parts: the keys file, token checks, the tenant and admin rule,
what counts as a local address, and trace ids for the access log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from repogate.v1 import admin_pb2
from repositories.errors import PermissionDenied, Unauthenticated
from server.access import trace_id
from server.auth import ADMIN_ONLY, Authenticator, Principal, authorize, is_local
from server.auth.keys import ApiKeys
from server.auth.principal import parse_scopes, parse_tenants
from server.auth.tokens import Rules, Tokens

pytestmark = pytest.mark.unit

KEY = "rg_live_0123456789abcdef0123456789abcdef"
SECRET = "a-shared-secret-of-thirty-two-chars!"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def keys_file(tmp_path: Path, keys: dict[str, Any], suffix: str = ".json") -> Path:
    path = tmp_path / f"keys{suffix}"
    path.write_text(json.dumps({"keys": keys}))
    return path


# The keys file


def test_keys_load_from_json_and_toml_alike(tmp_path: Path) -> None:
    json_file = keys_file(tmp_path, {"a": {"sha256": digest(KEY), "tenants": ["acme"]}})
    toml_file = tmp_path / "keys.toml"
    toml_file.write_text(f'[keys.a]\nsha256 = "{digest(KEY)}"\ntenants = ["acme"]\n')

    for path in (json_file, toml_file):
        assert ApiKeys.load(path).verify(KEY) == Principal(frozenset({"acme"}), name="key:a")


def test_a_key_is_found_by_its_digest_and_nothing_else(tmp_path: Path) -> None:
    keys = ApiKeys.load(
        keys_file(
            tmp_path,
            {
                "a": {"sha256": digest(KEY), "tenants": ["acme"], "scopes": ["admin"]},
                "b": {"sha256": digest("other").upper(), "tenants": "*"},
            },
        )
    )

    assert keys.verify(KEY) == Principal(frozenset({"acme"}), frozenset({"admin"}), "key:a")
    assert keys.verify("other").tenants == frozenset({"*"})
    for wrong in (KEY[:-1], KEY + "0", digest(KEY), ""):
        with pytest.raises(Unauthenticated) as err:
            keys.verify(wrong)
        assert err.value.reason == "CREDENTIALS_INVALID"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "at least one key"),
        ({"a": "not a table"}, "keys.a must be a table"),
        ({"a": {"sha256": KEY, "tenants": ["acme"]}}, "keys.a.sha256 must be the key's SHA-256"),
        ({"a": {"sha256": digest(KEY)}}, "keys.a: tenants must be a list"),
        ({"a": {"sha256": digest(KEY), "tenants": "acme"}}, "tenants must be a list"),
        ({"a": {"sha256": digest(KEY), "tenants": ["a b"]}}, "tenant 'a b'"),
        ({"a": {"sha256": digest(KEY), "tenants": [], "scopes": ["root"]}}, "scopes may only"),
        ({"a": {"sha256": digest(KEY), "tenants": [], "scopes": [{}]}}, "scopes may only"),
        (
            {"a": {"sha256": digest(KEY), "tenants": []}, "b": {"sha256": digest(KEY).upper()}},
            "tenants must be a list",
        ),
        (
            {
                "a": {"sha256": digest(KEY), "tenants": []},
                "b": {"sha256": digest(KEY), "tenants": []},
            },
            "one sha256 under two names",
        ),
    ],
)
def test_a_bad_keys_file_says_what_is_wrong_without_quoting_it(
    tmp_path: Path, keys: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        ApiKeys.load(keys_file(tmp_path, keys))

    assert KEY not in str(err.value)


@pytest.mark.parametrize("text", ["{", "[]", '{"keys": []}', "keys = 1"])
def test_a_keys_file_that_does_not_parse_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(text)

    with pytest.raises(ValueError, match=r"keys\.json"):
        ApiKeys.load(path)


def test_a_missing_keys_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        ApiKeys.load(tmp_path / "absent.json")


# Tokens


def verify(claims: dict[str, Any], rules: Rules | None = None) -> Principal:
    encoded = jwt.encode(claims, SECRET, algorithm="HS256")
    return asyncio.run(Tokens.hs256(SECRET, rules or Rules()).verify(encoded))


def in_five_minutes() -> int:
    return int(time.time()) + 300


def test_a_token_gives_its_tenants_and_scopes() -> None:
    principal = verify({"exp": in_five_minutes(), "tenants": ["acme"], "scope": "openid admin"})

    assert principal == Principal(frozenset({"acme"}), frozenset({"openid", "admin"}), "jwt")


def test_a_token_names_its_caller_by_its_subject() -> None:
    principal = verify({"exp": in_five_minutes(), "tenants": ["acme"], "sub": "svc-billing"})

    assert principal.name == "jwt:svc-billing"


def test_the_tenants_claim_is_configurable() -> None:
    claims = {"exp": in_five_minutes(), "https://repogate.dev/tenants": ["acme"]}

    principal = verify(claims, Rules(tenants_claim="https://repogate.dev/tenants"))

    assert principal.tenants == frozenset({"acme"})


def test_the_leeway_forgives_a_little_clock_skew() -> None:
    just_expired = {"exp": int(time.time()) - 5, "tenants": ["acme"]}

    assert verify(just_expired, Rules(leeway=30)).tenants == {"acme"}
    with pytest.raises(Unauthenticated) as err:
        verify(just_expired, Rules(leeway=0))
    assert err.value.reason == "TOKEN_EXPIRED"


@pytest.mark.parametrize(
    ("claims", "rules", "message"),
    [
        ({"aud": "x"}, Rules(), "(aud)"),
        ({}, Rules(audience="repogate"), "no 'aud' claim"),
        ({"iss": "someone"}, Rules(issuer="https://idp"), "(iss)"),
        # A time, not a number: computed when the test runs, not when it is collected.
        ({"nbf": in_five_minutes}, Rules(), "not valid yet"),
        ({"tenants": [1]}, Rules(), "'tenants' claim is not valid"),
        ({"tenants": {"acme": True}}, Rules(), "'tenants' claim is not valid"),
    ],
)
def test_a_token_that_breaks_a_rule_is_refused(
    claims: dict[str, Any], rules: Rules, message: str
) -> None:
    now = {key: value() if callable(value) else value for key, value in claims.items()}
    with pytest.raises(Unauthenticated) as err:
        verify({"exp": in_five_minutes(), **now}, rules)

    assert err.value.reason == "CREDENTIALS_INVALID"
    assert message in err.value.message


# Which credential a header carries


def test_bearer_goes_to_tokens_when_jwt_shaped_and_to_keys_otherwise(tmp_path: Path) -> None:
    keys = ApiKeys.load(keys_file(tmp_path, {"a": {"sha256": digest(KEY), "tenants": ["k"]}}))
    both = Authenticator(keys, Tokens.hs256(SECRET, Rules()))
    encoded = jwt.encode({"exp": in_five_minutes(), "tenants": ["t"]}, SECRET, algorithm="HS256")

    assert asyncio.run(both.authenticate([("authorization", f"Bearer {KEY}")])).tenants == {"k"}
    assert asyncio.run(both.authenticate([("authorization", f"ApiKey {KEY}")])).tenants == {"k"}
    assert asyncio.run(both.authenticate([("authorization", f"bearer {encoded}")])).tenants == {"t"}
    # The first authorization counts, as for every other key.
    first = [("authorization", f"Bearer {encoded}"), ("authorization", "Bearer nope")]
    assert asyncio.run(both.authenticate(first)).tenants == {"t"}


def test_jwt_only_takes_every_bearer_as_a_token() -> None:
    tokens_only = Authenticator(None, Tokens.hs256(SECRET, Rules()))

    with pytest.raises(Unauthenticated, match="token is malformed"):
        asyncio.run(tokens_only.authenticate([("authorization", f"Bearer {KEY}")]))
    with pytest.raises(Unauthenticated, match="takes no API keys"):
        asyncio.run(tokens_only.authenticate([("authorization", f"ApiKey {KEY}")]))


def test_binary_or_empty_authorization_counts_as_missing() -> None:
    tokens_only = Authenticator(None, Tokens.hs256(SECRET, Rules()))

    for metadata in ([], [("authorization", "")], [("authorization", b"Bearer x")]):
        with pytest.raises(Unauthenticated) as err:
            asyncio.run(tokens_only.authenticate(metadata))
        assert err.value.reason == "CREDENTIALS_MISSING"


# Tenants, scopes and the admin rule


def test_parse_tenants_takes_lists_and_star() -> None:
    assert parse_tenants(["acme", "globex"]) == {"acme", "globex"}
    assert parse_tenants("*") == parse_tenants(["*"]) == {"*"}
    assert parse_tenants([]) == frozenset()
    for bad in ("acme", None, [None], ["x" * 200]):
        with pytest.raises(ValueError, match="tenant"):
            parse_tenants(bad)


def test_parse_scopes_takes_a_string_or_a_list_and_ignores_the_rest() -> None:
    assert parse_scopes("read  admin") == parse_scopes(["read", "admin", 3]) == {"read", "admin"}
    assert parse_scopes(None) == parse_scopes(7) == frozenset()


def test_authorize_checks_the_tenant_when_the_call_names_one() -> None:
    acme = Principal(frozenset({"acme"}))

    authorize(acme, "acme", needs_admin=False)
    authorize(acme, None, needs_admin=False)
    authorize(Principal(frozenset({"*"})), "globex", needs_admin=False)
    with pytest.raises(PermissionDenied) as err:
        authorize(acme, "globex", needs_admin=False)
    assert err.value.reason == "TENANT_NOT_ALLOWED"


def test_authorize_checks_the_admin_scope_first() -> None:
    everyone = Principal(frozenset({"*"}))

    authorize(Principal(frozenset(), frozenset({"admin"})), None, needs_admin=True)
    with pytest.raises(PermissionDenied) as err:
        authorize(everyone, "acme", needs_admin=True)
    assert (err.value.reason, err.value.metadata) == ("ADMIN_SCOPE_REQUIRED", {"scope": "admin"})


def test_the_admin_rule_names_the_real_admin_service() -> None:
    assert admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name in ADMIN_ONLY


# Local addresses


@pytest.mark.parametrize(
    ("listen", "local"),
    [
        ("127.0.0.1:50051", True),
        ("127.9.9.9:0", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("unix:/run/repogate.sock", True),
        ("unix-abstract:repogate", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        (":50051", False),
        ("10.0.0.5:50051", False),
        ("repogate.internal:50051", False),
    ],
)
def test_is_local(listen: str, local: bool) -> None:
    assert is_local(listen) is local


# Trace ids


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6-00f067aa0ba902b7-01", None),
        ("garbage", None),
    ],
)
def test_trace_id_from_traceparent(value: str, expected: str | None) -> None:
    assert trace_id(value) == expected
    assert trace_id(None) is None
