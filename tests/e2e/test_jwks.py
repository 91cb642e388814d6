"""JWTs verified against a JSON Web Key Set served over HTTP, whose keys rotate: the set
is cached, fetched again on an unknown kid (at most so often) or when it is stale, and
kept when the provider is down. Last, the same through a real `repogate serve`."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc import aio
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from repogate.v1 import user_pb2, user_pb2_grpc
from repositories.errors import Unauthenticated
from server.auth.jwks import Jwks
from server.auth.tokens import Rules, Tokens
from tests.e2e.test_cli import cli_env, serving
from tests.rpc import md

pytestmark = pytest.mark.e2e

TENANT = "acme"


class Provider:
    """An identity provider's jwks_uri: serves the current set, counts fetches, can fail."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.down = False
        self.claimed_issuer: str | None = None  # what discovery says; None: the truth
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    document: dict[str, Any] = {
                        "issuer": provider.claimed_issuer or provider.issuer,
                        "jwks_uri": provider.url,
                    }
                else:
                    provider.fetches += 1
                    document = {"keys": provider.keys}
                if provider.down:
                    self.send_error(503)
                    return
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self._http.server_address[1]}"
        self.url = f"{self.issuer}/keys/jwks.json"

    def publish(self, *keys: Signer) -> None:
        self.keys = [key.jwk for key in keys]

    @contextlib.contextmanager
    def running(self) -> Iterator[Provider]:
        thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._http.shutdown()
            self._http.server_close()
            thread.join()


class Signer:
    """A private key the provider signs with, and its public JWK."""

    def __init__(self, kind: str = "RSA") -> None:
        self.kid = uuid.uuid4().hex
        if kind == "RSA":
            self._key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.algorithm = "RS256"
            jwk = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        else:
            self._key = ec.generate_private_key(ec.SECP256R1())
            self.algorithm = "ES256"
            jwk = ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        self.jwk = {**jwk, "kid": self.kid, "use": "sig"}

    def public_pem(self) -> bytes:
        return bytes(
            self._key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def token(self, kid: str | None = None, tenant: str = TENANT, iss: str | None = None) -> str:
        claims: dict[str, Any] = {"exp": int(time.time()) + 3600, "tenants": [tenant]}
        if iss is not None:
            claims["iss"] = iss
        headers = {"kid": kid or self.kid}
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)


def b64(document: dict[str, Any]) -> str:
    return jwt.utils.base64url_encode(json.dumps(document).encode()).decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def provider() -> Iterator[Provider]:
    with Provider().running() as running:
        yield running


def tokens(provider: Provider, clock: Clock, ttl: float = 300, refetch: float = 10) -> Tokens:
    return Tokens(Jwks(provider.url, ttl, refetch, clock=clock), Rules())


async def test_a_token_verifies_with_its_key_and_the_set_is_fetched_once(
    provider: Provider,
) -> None:
    rsa_key, ec_key = Signer("RSA"), Signer("EC")
    provider.publish(rsa_key, ec_key)
    verifier = tokens(provider, Clock())

    for _ in range(3):
        assert (await verifier.verify(rsa_key.token())).tenants == {TENANT}
        assert (await verifier.verify(ec_key.token())).tenants == {TENANT}

    assert provider.fetches == 1


async def test_a_key_rotated_in_verifies_without_waiting_for_the_ttl(provider: Provider) -> None:
    old, new = Signer(), Signer()
    provider.publish(old)
    clock = Clock()
    verifier = tokens(provider, clock, ttl=300, refetch=10)
    await verifier.verify(old.token())

    provider.publish(old, new)
    clock.now += 10

    assert (await verifier.verify(new.token())).tenants == {TENANT}
    assert provider.fetches == 2


async def test_unknown_kids_fetch_the_set_at_most_once_per_interval(provider: Provider) -> None:
    key = Signer()
    provider.publish(key)
    clock = Clock()
    verifier = tokens(provider, clock, refetch=10)
    await verifier.verify(key.token())

    for _ in range(20):
        with pytest.raises(Unauthenticated, match="does not know"):
            await verifier.verify(key.token(kid=uuid.uuid4().hex))
    assert provider.fetches == 1  # none for a kid unknown right after a fetch

    clock.now += 10
    for _ in range(20):
        with pytest.raises(Unauthenticated):
            await verifier.verify(key.token(kid=uuid.uuid4().hex))
    assert provider.fetches == 2  # one for the first unknown kid

    clock.now += 10
    with pytest.raises(Unauthenticated):
        await verifier.verify(key.token(kid=uuid.uuid4().hex))
    assert provider.fetches == 3


async def test_a_stale_set_is_fetched_again_and_a_retired_key_refused(provider: Provider) -> None:
    old, new = Signer(), Signer()
    provider.publish(old)
    clock = Clock()
    verifier = tokens(provider, clock, ttl=300)
    await verifier.verify(old.token())

    provider.publish(new)
    clock.now += 299
    await verifier.verify(old.token())  # still cached
    assert provider.fetches == 1
    clock.now += 1

    with pytest.raises(Unauthenticated):
        await verifier.verify(old.token())
    assert provider.fetches == 2


async def test_the_keys_are_kept_while_the_provider_is_down(provider: Provider) -> None:
    key = Signer()
    provider.publish(key)
    clock = Clock()
    verifier = tokens(provider, clock, ttl=300, refetch=10)
    await verifier.verify(key.token())

    provider.down = True
    clock.now += 400

    assert (await verifier.verify(key.token())).tenants == {TENANT}
    assert (await verifier.verify(key.token())).tenants == {TENANT}
    assert provider.fetches == 2  # one failed attempt, not one per call


async def test_the_algorithm_is_the_keys_not_the_tokens(provider: Provider) -> None:
    key = Signer()
    provider.publish(key)
    verifier = tokens(provider, Clock())
    # HS256 with the published public key as the secret, the classic confusion: PyJWT
    # refuses to make it, so it is made by hand.
    public_pem = key.public_pem()
    header = b64({"alg": "HS256", "typ": "JWT", "kid": key.kid})
    payload = b64({"exp": int(time.time()) + 60, "tenants": [TENANT]})
    mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{jwt.utils.base64url_encode(mac).decode()}"

    with pytest.raises(Unauthenticated, match="algorithm"):
        await verifier.verify(forged)


@pytest.mark.parametrize("found_by", ["url", "discovery"])
async def test_repogate_serve_verifies_tokens_of_a_rotating_jwks(
    provider: Provider, tmp_path: Path, tenant: str, found_by: str
) -> None:
    old, new = Signer(), Signer()
    provider.publish(old)
    where = (
        {"jwt_jwks_url": provider.url}
        if found_by == "url"
        else {"jwt_oidc_discovery": "true", "jwt_issuer": provider.issuer}
    )
    # Every unknown kid fetches the set: the new key is published just after the first.
    env = cli_env(tmp_path, auth_mode="jwt", jwt_jwks_refetch_interval="0", **where)
    address = env["REPOGATE_LISTEN"]

    async with serving(env, tmp_path, address), aio.insecure_channel(address) as channel:
        users = user_pb2_grpc.UserServiceStub(channel)

        async def code(token: str) -> grpc.StatusCode:
            try:
                await users.ListUsers(
                    user_pb2.ListUsersRequest(),
                    metadata=(*md(tenant), ("authorization", f"Bearer {token}")),
                    timeout=10,
                )
            except aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        iss = provider.issuer  # required only with discovery, which sets REPOGATE_JWT_ISSUER
        assert await code(old.token(tenant=tenant, iss=iss)) == grpc.StatusCode.OK
        provider.publish(new)
        assert await code(new.token(tenant=tenant, iss=iss)) == grpc.StatusCode.OK
        unknown = Signer().token(tenant=tenant, iss=iss)
        assert await code(unknown) == grpc.StatusCode.UNAUTHENTICATED


async def test_the_set_is_found_by_openid_connect_discovery(provider: Provider) -> None:
    key = Signer()
    provider.publish(key)
    verifier = Tokens(Jwks(None, issuer=provider.issuer), Rules())

    assert (await verifier.verify(key.token())).tenants == {TENANT}
    assert provider.fetches == 1


async def test_discovery_naming_another_issuer_gives_no_keys(provider: Provider) -> None:
    key = Signer()
    provider.publish(key)
    provider.claimed_issuer = "https://elsewhere.example"
    verifier = Tokens(Jwks(None, issuer=provider.issuer), Rules())

    with pytest.raises(Unauthenticated, match="does not know"):
        await verifier.verify(key.token())
    assert provider.fetches == 0
