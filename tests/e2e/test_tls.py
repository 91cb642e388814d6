"""TLS and mutual TLS through a real server, with certificates made for each test."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc import aio

from repogate.v1 import user_pb2, user_pb2_grpc
from tests.e2e.support import Dedicated, StartRepogate
from tests.pki import Authority, Issued
from tests.rpc import md

pytestmark = pytest.mark.e2e


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path, "ca")


@pytest.fixture
def stranger(tmp_path: Path) -> Authority:
    """A CA nobody here trusts."""
    return Authority(tmp_path, "stranger")


def tls_settings(server: Issued, client_ca: Authority | None = None) -> dict[str, Path]:
    settings = {"tls_cert_file": server.cert_file, "tls_key_file": server.key_file}
    if client_ca is not None:
        settings["tls_client_ca_file"] = client_ca.cert_file
    return settings


async def list_users(
    app: Dedicated, tenant: str, credentials: grpc.ChannelCredentials | None
) -> user_pb2.ListUsersResponse:
    """One call on a channel of its own: TLS with `credentials`, or plaintext."""
    address = app.app.address
    channel = (
        aio.insecure_channel(address)
        if credentials is None
        else aio.secure_channel(address, credentials)
    )
    async with channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        return await stub.ListUsers(user_pb2.ListUsersRequest(), metadata=md(tenant), timeout=10)


async def unavailable(
    app: Dedicated, tenant: str, credentials: grpc.ChannelCredentials | None
) -> None:
    with pytest.raises(aio.AioRpcError) as err:
        await list_users(app, tenant, credentials)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def trusting(ca: Authority, client: Issued | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=ca.cert_pem)
    return grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem,
        private_key=client.key_pem,
        certificate_chain=client.cert_pem,
    )


async def test_tls_serves_clients_that_trust_its_ca(
    start_repogate: StartRepogate, ca: Authority, tenant: str
) -> None:
    app = await start_repogate(**tls_settings(ca.server()))

    response = await list_users(app, tenant, trusting(ca))

    assert list(response.users) == []


async def test_tls_refuses_plaintext(
    start_repogate: StartRepogate, ca: Authority, tenant: str
) -> None:
    app = await start_repogate(**tls_settings(ca.server()))

    await unavailable(app, tenant, None)


async def test_a_client_that_does_not_trust_the_ca_refuses_the_server(
    start_repogate: StartRepogate, ca: Authority, stranger: Authority, tenant: str
) -> None:
    app = await start_repogate(**tls_settings(ca.server()))

    await unavailable(app, tenant, trusting(stranger))


async def test_mutual_tls_serves_a_client_certificate_from_its_ca(
    start_repogate: StartRepogate, ca: Authority, tenant: str
) -> None:
    app = await start_repogate(**tls_settings(ca.server(), client_ca=ca))

    response = await list_users(app, tenant, trusting(ca, ca.client()))

    assert list(response.users) == []


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    start_repogate: StartRepogate, ca: Authority, tenant: str
) -> None:
    app = await start_repogate(**tls_settings(ca.server(), client_ca=ca))

    await unavailable(app, tenant, trusting(ca))
    await unavailable(app, tenant, None)


async def test_mutual_tls_refuses_a_certificate_from_another_ca(
    start_repogate: StartRepogate, ca: Authority, stranger: Authority, tenant: str
) -> None:
    app = await start_repogate(**tls_settings(ca.server(), client_ca=ca))

    await unavailable(app, tenant, trusting(ca, stranger.client("intruder")))


async def test_mutual_tls_counts_as_authentication_on_the_network(
    start_repogate: StartRepogate, ca: Authority
) -> None:
    app = await start_repogate(listen="0.0.0.0:0", **tls_settings(ca.server(), client_ca=ca))

    assert app.app.address.startswith("0.0.0.0:")
