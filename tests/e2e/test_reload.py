"""Rotating keys and certificates under a real `repogate serve`: API keys, JWT keys and the
TLS certificate are replaced on disk, then SIGHUP (or the next look at the files) loads
them; calls keep going throughout, on connections opened before, and a broken file
keeps what was loaded."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import jwt
import pytest
from grpc import aio

from repogate.v1 import user_pb2, user_pb2_grpc
from tests.e2e.test_cli import CHANNEL_OPTIONS, cli_env, serving
from tests.pki import Authority, rsa_key_pair
from tests.polling import eventually
from tests.rpc import md

pytestmark = pytest.mark.e2e

RPC_TIMEOUT = 10.0
# A channel of its own per credentials: a new connection, so a new handshake.
OWN_CONNECTION = (*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1))


def new_key() -> str:
    return f"rg_{secrets.token_urlsafe(24)}"


def write_keys(path: Path, tenant: str, *keys: str) -> None:
    entries = {
        f"k{i}": {"sha256": hashlib.sha256(key.encode()).hexdigest(), "tenants": [tenant]}
        for i, key in enumerate(keys)
    }
    replace(path, json.dumps({"keys": entries}).encode())


def replace(path: Path, data: bytes) -> None:
    """Writes `path` as a secret mount does: a new file renamed over the old one."""
    fresh = path.with_suffix(".new")
    fresh.write_bytes(data)
    fresh.replace(path)


def token(private_pem: bytes | str, tenant: str, algorithm: str = "RS256") -> str:
    claims = {"exp": int(time.time()) + 3600, "tenants": [tenant]}
    return jwt.encode(claims, private_pem, algorithm=algorithm)


class Caller:
    """ListUsers as `tenant` over one channel, with a credential."""

    def __init__(self, channel: aio.Channel, tenant: str) -> None:
        self._users = user_pb2_grpc.UserServiceStub(channel)
        self._tenant = tenant

    async def code(self, authorization: str) -> grpc.StatusCode:
        try:
            await self._users.ListUsers(
                user_pb2.ListUsersRequest(),
                metadata=(*md(self._tenant), ("authorization", authorization)),
                timeout=RPC_TIMEOUT,
            )
        except aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    async def accepts(self, authorization: str) -> bool:
        return await self.code(authorization) == grpc.StatusCode.OK


@contextlib.asynccontextmanager
async def tls_channel(address: str, *cas: Authority) -> AsyncIterator[aio.Channel]:
    roots = b"".join(ca.cert_pem for ca in cas)
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    async with aio.secure_channel(address, credentials, options=OWN_CONNECTION) as channel:
        yield channel


async def handshakes(address: str, ca: Authority) -> bool:
    """Whether a new connection trusting only `ca` gets through."""
    async with tls_channel(address, ca) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), 3)
        except TimeoutError:
            return False
        return True


@contextlib.asynccontextmanager
async def steady_calls(caller: Caller, authorization: str) -> AsyncIterator[list[grpc.StatusCode]]:
    """Calls one after another (several at a time) until the block ends; yields their codes."""
    codes: list[grpc.StatusCode] = []
    done = asyncio.Event()

    async def loop() -> None:
        while not done.is_set():
            codes.append(await caller.code(authorization))

    tasks = [asyncio.create_task(loop()) for _ in range(4)]
    try:
        yield codes
    finally:
        done.set()
        await asyncio.gather(*tasks)


async def test_sighup_rotates_api_keys_jwt_key_and_certificate_with_calls_going_on(
    tmp_path: Path, tenant: str
) -> None:
    old_ca, new_ca = Authority(tmp_path, "old-ca"), Authority(tmp_path, "new-ca")
    issued = old_ca.server("server")
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    replace(cert_file, issued.cert_pem)
    replace(key_file, issued.key_pem)
    keys_file = tmp_path / "keys.json"
    staying, retired, arriving = new_key(), new_key(), new_key()
    write_keys(keys_file, tenant, staying, retired)
    old_private, old_public = rsa_key_pair()
    new_private, new_public = rsa_key_pair()
    public_file = tmp_path / "jwt.pub"
    replace(public_file, old_public)
    env = cli_env(
        tmp_path,
        auth_mode="keys,jwt",
        api_keys_file=str(keys_file),
        jwt_public_key_file=str(public_file),
        tls_cert_file=str(cert_file),
        tls_key_file=str(key_file),
        reload_interval="0",  # SIGHUP only
    )
    address = env["REPOGATE_LISTEN"]
    both_cas = grpc.ssl_channel_credentials(root_certificates=old_ca.cert_pem + new_ca.cert_pem)

    async with (
        serving(env, tmp_path, address, credentials=both_cas) as server,
        tls_channel(address, old_ca, new_ca) as channel,
    ):
        caller = Caller(channel, tenant)
        assert await caller.accepts(f"ApiKey {retired}")
        assert not await caller.accepts(f"ApiKey {arriving}")
        assert await caller.accepts(f"Bearer {token(old_private, tenant)}")
        assert not await handshakes(address, new_ca)

        async with steady_calls(caller, f"ApiKey {staying}") as codes:
            await eventually(lambda: len(codes) >= 20, "calls before the rotation")
            write_keys(keys_file, tenant, staying, arriving)
            replace(public_file, new_public)
            rotated = new_ca.server("rotated")
            replace(cert_file, rotated.cert_pem)
            replace(key_file, rotated.key_pem)
            before = len(codes)
            server.proc.send_signal(signal.SIGHUP)
            await eventually(
                lambda: caller.accepts(f"ApiKey {arriving}"), "the new API key", within=15
            )
            await eventually(lambda: len(codes) >= before + 20, "calls after the rotation")

        # Every call made while the files were swapped and loaded succeeded, on a
        # connection opened before the rotation.
        assert set(codes) == {grpc.StatusCode.OK}
        assert await caller.code(f"ApiKey {retired}") == grpc.StatusCode.UNAUTHENTICATED
        assert await caller.accepts(f"Bearer {token(new_private, tenant)}")
        bearer_old = f"Bearer {token(old_private, tenant)}"
        assert await caller.code(bearer_old) == grpc.StatusCode.UNAUTHENTICATED
        # New connections get the new certificate.
        assert await handshakes(address, new_ca)
        assert not await handshakes(address, old_ca)
        assert "reloaded" in server.output()


async def test_a_broken_file_keeps_what_was_loaded(tmp_path: Path, tenant: str) -> None:
    ca, other_ca = Authority(tmp_path, "ca"), Authority(tmp_path, "other-ca")
    issued = ca.server("server")
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    replace(cert_file, issued.cert_pem)
    replace(key_file, issued.key_pem)
    keys_file = tmp_path / "keys.json"
    key = new_key()
    write_keys(keys_file, tenant, key)
    env = cli_env(
        tmp_path,
        auth_mode="keys",
        api_keys_file=str(keys_file),
        tls_cert_file=str(cert_file),
        tls_key_file=str(key_file),
        reload_interval="0",
    )
    address = env["REPOGATE_LISTEN"]
    trusted = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem)

    async with serving(env, tmp_path, address, credentials=trusted) as server:
        replace(keys_file, b'{"keys": {"half-written": ')
        # A certificate whose key is not in the key file: loading both would fail.
        replace(cert_file, other_ca.server("mismatch").cert_pem)
        server.proc.send_signal(signal.SIGHUP)
        # The keys, the server's certificate, and the one presented to fleet peers.
        await eventually(
            lambda: server.output().count("failed, keeping what was loaded before") == 3,
            "the reload's errors in the log",
            within=15,
        )

        async with tls_channel(address, ca) as channel:
            assert await Caller(channel, tenant).accepts(f"ApiKey {key}")
        assert not await handshakes(address, other_ca)
        assert server.proc.returncode is None


async def test_changed_files_load_without_a_signal(tmp_path: Path, tenant: str) -> None:
    keys_file = tmp_path / "keys.json"
    secret_file = tmp_path / "jwt-secret"
    old_key, new_key_ = new_key(), new_key()
    old_secret, new_secret = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    write_keys(keys_file, tenant, old_key)
    replace(secret_file, f"{old_secret}\n".encode())
    env = cli_env(
        tmp_path,
        auth_mode="keys,jwt",
        api_keys_file=str(keys_file),
        jwt_secret_file=str(secret_file),
        reload_interval="0.2",
    )
    address = env["REPOGATE_LISTEN"]

    async with (
        serving(env, tmp_path, address),
        aio.insecure_channel(address) as channel,
    ):
        caller = Caller(channel, tenant)
        assert await caller.accepts(f"Bearer {token(old_secret, tenant, 'HS256')}")
        write_keys(keys_file, tenant, new_key_)
        replace(secret_file, f"{new_secret}\n".encode())

        await eventually(lambda: caller.accepts(f"ApiKey {new_key_}"), "the new key", within=15)
        await eventually(
            lambda: caller.accepts(f"Bearer {token(new_secret, tenant, 'HS256')}"),
            "the new JWT secret",
            within=15,
        )
        assert not await caller.accepts(f"ApiKey {old_key}")
        assert not await caller.accepts(f"Bearer {token(old_secret, tenant, 'HS256')}")
