"""Authentication through a real server: API keys and JWTs, each bound to tenants,
against every way a credential can be missing, malformed, wrong or out of bounds."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from repogate.v1 import admin_pb2, admin_pb2_grpc, user_pb2
from tests.e2e.support import Dedicated, StartRepogate, fails
from tests.pki import rsa_key_pair
from tests.rpc import md

pytestmark = pytest.mark.e2e

SECRET = secrets.token_urlsafe(32)
KEYS = {name: f"rg_{name}_{secrets.token_urlsafe(24)}" for name in ("own", "every", "ops")}


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# A day: tokens in `parametrize` are minted as the module is collected, and used as late
# as a whole suite's run after that.
VALID_FOR = 86_400


def token(key: str | bytes = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """A JWT valid for a day unless `claims` say otherwise."""
    return jwt.encode({"exp": int(time.time()) + VALID_FOR, **claims}, key, algorithm=algorithm)


def confused(public_pem: bytes, **claims: Any) -> str:
    """HS256 with an RSA public key as the secret: the classic algorithm confusion.
    Made by hand, since PyJWT refuses to sign so."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    payload = {"exp": int(time.time()) + VALID_FOR, **claims}
    signed = part(b'{"alg":"HS256","typ":"JWT"}') + "." + part(json.dumps(payload).encode())
    signature = hmac.new(public_pem, signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{part(signature)}"


def other(tenant: str) -> str:
    return f"{tenant}-other"


@pytest.fixture
def keys_file(tmp_path: Path, tenant: str) -> Path:
    """`own` acts for the test's tenant, `every` for every tenant, `ops` for none but is admin."""
    path = tmp_path / "keys.toml"
    path.write_text(
        f"""
[keys.own]
sha256 = "{sha256(KEYS["own"])}"
tenants = ["{tenant}"]

[keys.every]
sha256 = "{sha256(KEYS["every"])}"
tenants = "*"

[keys.ops]
sha256 = "{sha256(KEYS["ops"])}"
tenants = []
scopes = ["admin"]
"""
    )
    return path


@pytest.fixture
async def guarded(start_repogate: StartRepogate, keys_file: Path) -> Dedicated:
    """API keys and HS256 tokens."""
    return await start_repogate(auth_mode="keys,jwt", api_keys_file=keys_file, jwt_secret=SECRET)


async def list_users(
    app: Dedicated, tenant: str, authorization: str | None, **extra: str
) -> user_pb2.ListUsersResponse:
    metadata = md(tenant, **extra)
    if authorization is not None:
        metadata += (("authorization", authorization),)
    return await app.users.ListUsers(user_pb2.ListUsersRequest(), metadata=metadata, timeout=10)


async def refused(app: Dedicated, tenant: str, authorization: str | None, **extra: str):
    return await fails(list_users(app, tenant, authorization, **extra))


# Missing and malformed


async def test_a_call_without_credentials_is_unauthenticated(guarded, tenant) -> None:
    error = await refused(guarded, tenant, None, x_request_id="req-1")

    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == "CREDENTIALS_MISSING"
    assert error.metadata == {"request_id": "req-1"}


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Bearer", "ApiKey", "Token abc", "Bearer  ", "rg_own_plain"],
)
async def test_a_malformed_authorization_is_unauthenticated(guarded, tenant, header) -> None:
    error = await refused(guarded, tenant, header)

    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == "CREDENTIALS_INVALID"
    assert "'Bearer <token>' or 'ApiKey <key>'" in error.message


# Wrong credentials


@pytest.mark.parametrize("scheme", ["ApiKey", "Bearer", "apikey", "BEARER"])
async def test_a_wrong_key_is_unauthenticated_and_never_echoed(guarded, tenant, scheme) -> None:
    wrong = KEYS["own"] + "x"

    error = await refused(guarded, tenant, f"{scheme} {wrong}")

    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_INVALID")
    assert wrong not in error.message
    assert wrong not in json.dumps(error.metadata)


async def test_an_expired_token_is_unauthenticated(guarded, tenant) -> None:
    # Past the 30 s leeway.
    expired = token(tenants=[tenant], exp=int(time.time()) - 120)

    error = await refused(guarded, tenant, f"Bearer {expired}")

    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")
    assert expired not in error.message


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda t: token("another-secret-of-at-least-32-chars!", tenants=[t]), "signature"),
        (lambda t: token(tenants=[t], nbf=int(time.time()) + 600), "not valid yet"),
        (lambda t: jwt.encode({"tenants": [t]}, SECRET, algorithm="HS256"), "'exp'"),
        (lambda t: jwt.encode({"tenants": [t], "exp": 2**40}, None, algorithm="none"), "algorithm"),
        (lambda t: token(tenants="acme,globex"), "'tenants' claim"),
        (lambda t: token(tenants=[t])[:-4] + "AAAA", "signature"),
        (lambda t: "a.b.c", "malformed"),
    ],
    ids=["wrong-signature", "nbf", "no-exp", "alg-none", "tenants-not-a-list", "tampered", "junk"],
)
async def test_a_bad_token_is_unauthenticated(guarded, tenant, make, why: str) -> None:
    bad = make(tenant)

    error = await refused(guarded, tenant, f"Bearer {bad}")

    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_INVALID")
    assert why in error.message
    assert bad not in error.message


# Tenants


def credential(kind: str, tenant: str) -> str:
    """A credential of `kind` that may act for `tenant` only."""
    return {
        "ApiKey": f"ApiKey {KEYS['own']}",
        "Bearer key": f"Bearer {KEYS['own']}",
        "HS256": f"Bearer {token(tenants=[tenant])}",
    }[kind]


@pytest.mark.parametrize("kind", ["ApiKey", "Bearer key", "HS256"])
async def test_a_credential_acts_for_its_own_tenant(guarded, tenant, kind: str) -> None:
    response = await list_users(guarded, tenant, credential(kind, tenant))

    assert list(response.users) == []


@pytest.mark.parametrize("kind", ["ApiKey", "Bearer key", "HS256"])
async def test_a_credential_may_not_act_for_another_tenant(guarded, tenant, kind: str) -> None:
    error = await refused(guarded, other(tenant), credential(kind, tenant))

    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "TENANT_NOT_ALLOWED")
    assert other(tenant) in error.message


@pytest.mark.parametrize(
    "authorization",
    [f"ApiKey {KEYS['every']}", f"Bearer {token(tenants='*')}", f"Bearer {token(tenants=['*'])}"],
    ids=["key", "token-star", "token-star-in-list"],
)
async def test_a_star_credential_acts_for_every_tenant(guarded, tenant, authorization) -> None:
    for who in (tenant, other(tenant)):
        assert list((await list_users(guarded, who, authorization)).users) == []


async def test_a_token_without_tenants_acts_for_none(guarded, tenant) -> None:
    error = await refused(guarded, tenant, f"Bearer {token(sub='someone')}")

    assert error.reason == "TENANT_NOT_ALLOWED"


async def test_the_tenant_is_still_validated_first(guarded) -> None:
    error = await refused(guarded, "not a tenant!", f"ApiKey {KEYS['every']}")

    assert error.reason == "INVALID_TENANT"


# RS256


async def test_rs256_tokens_verify_with_the_public_key(
    start_repogate: StartRepogate, tmp_path: Path, tenant: str
) -> None:
    private, public = rsa_key_pair()
    (tmp_path / "jwt.pub").write_bytes(public)
    app = await start_repogate(auth_mode="jwt", jwt_public_key_file=tmp_path / "jwt.pub")
    stranger, _ = rsa_key_pair()

    ok = await list_users(app, tenant, f"Bearer {token(private, 'RS256', tenants=[tenant])}")
    elsewhere = await refused(
        app, other(tenant), f"Bearer {token(private, 'RS256', tenants=[tenant])}"
    )
    forged = await refused(app, tenant, f"Bearer {token(stranger, 'RS256', tenants=[tenant])}")
    hmac_with_public = await refused(app, tenant, f"Bearer {confused(public, tenants=[tenant])}")
    key = await refused(app, tenant, f"ApiKey {KEYS['own']}")

    assert list(ok.users) == []
    assert elsewhere.reason == "TENANT_NOT_ALLOWED"
    assert (forged.reason, hmac_with_public.reason) == ("CREDENTIALS_INVALID",) * 2
    assert "signature" in forged.message
    assert "algorithm" in hmac_with_public.message
    assert "takes no API keys" in key.message


# Audience and issuer


async def test_audience_and_issuer_are_checked_when_set(
    start_repogate: StartRepogate, tenant: str
) -> None:
    app = await start_repogate(
        auth_mode="jwt", jwt_secret=SECRET, jwt_audience="repogate", jwt_issuer="https://idp"
    )
    right = {"tenants": [tenant], "aud": "repogate", "iss": "https://idp"}

    ok = await list_users(app, tenant, f"Bearer {token(**right)}")
    audience = await refused(app, tenant, f"Bearer {token(**{**right, 'aud': 'billing'})}")
    issuer = await refused(app, tenant, f"Bearer {token(**{**right, 'iss': 'https://evil'})}")

    assert list(ok.users) == []
    assert "(aud)" in audience.message
    assert "(iss)" in issuer.message


async def test_keys_only_takes_a_jwt_shaped_bearer_as_a_key(
    start_repogate: StartRepogate, keys_file: Path, tenant: str
) -> None:
    app = await start_repogate(auth_mode="keys", api_keys_file=keys_file)

    error = await refused(app, tenant, f"Bearer {token(tenants=[tenant])}")

    assert error.message == "the API key is not valid"


# Admin scope


def pool_status(app: Dedicated, authorization: str | None):
    metadata = () if authorization is None else (("authorization", authorization),)
    stub = admin_pb2_grpc.AdminServiceStub(app.channel)
    return stub.GetPoolStatus(admin_pb2.GetPoolStatusRequest(), metadata=metadata, timeout=10)


@pytest.mark.parametrize(
    "authorization",
    [f"ApiKey {KEYS['ops']}", f"Bearer {token(scope='read admin')}"],
    ids=["key", "token"],
)
async def test_the_admin_service_serves_the_admin_scope(guarded, authorization) -> None:
    status = await pool_status(guarded, authorization)

    assert status.dialect == "sqlite"


@pytest.mark.parametrize(
    "authorization",
    [f"ApiKey {KEYS['every']}", f"Bearer {token(tenants='*', scope='read')}"],
    ids=["key", "token"],
)
async def test_the_admin_service_refuses_other_scopes(guarded, authorization) -> None:
    error = await fails(pool_status(guarded, authorization))

    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_SCOPE_REQUIRED")
    assert error.metadata["scope"] == "admin"


async def test_the_admin_service_needs_credentials_too(guarded) -> None:
    error = await fails(pool_status(guarded, None))

    assert error.reason == "CREDENTIALS_MISSING"


async def test_the_admin_scope_does_not_open_tenants(guarded, tenant) -> None:
    error = await refused(guarded, tenant, f"ApiKey {KEYS['ops']}")

    assert error.reason == "TENANT_NOT_ALLOWED"


# What stays open


async def test_health_and_reflection_need_no_credentials(guarded) -> None:
    health = health_pb2_grpc.HealthStub(guarded.channel)
    reflection = reflection_pb2_grpc.ServerReflectionStub(guarded.channel)

    checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    (listed,) = [
        response
        async for response in reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
    ]

    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    assert "repogate.v1.UserService" in {s.name for s in listed.list_services_response.service}


async def test_without_auth_mode_no_credential_is_asked_for(
    start_repogate: StartRepogate, tenant: str
) -> None:
    app = await start_repogate()

    assert list((await list_users(app, tenant, None)).users) == []
    assert list((await list_users(app, tenant, "Bearer anything")).users) == []


async def test_a_non_loopback_address_without_auth_is_refused(
    start_repogate: StartRepogate,
) -> None:
    with pytest.raises(PermissionError, match=r"refusing to listen on 0\.0\.0\.0:0"):
        await start_repogate(listen="0.0.0.0:0")


@pytest.mark.parametrize(
    "settings",
    [{"allow_unauthenticated_network": True}, {"auth_mode": "jwt", "jwt_secret": SECRET}],
    ids=["told-to", "authenticated"],
)
async def test_a_non_loopback_address_is_served_when_allowed(
    start_repogate: StartRepogate, tenant: str, settings: dict[str, Any]
) -> None:
    app = await start_repogate(listen="0.0.0.0:0", **settings)
    port = app.app.address.rsplit(":", 1)[1]

    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)

    assert reply.status == health_pb2.HealthCheckResponse.SERVING
