"""Transaction ids: who owns the transaction and where it is reached, bound to the
tenant by a MAC only the fleet's key makes; and the addresses processes advertise."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import socket

import pytest
from pydantic import ValidationError

from repositories.transaction_ids import ADDRESS_MAX, Route, TransactionIds
from server import peers as peers_module
from server.context import validate_transaction_id
from server.peers import Peers, advertised, host_address
from server.settings import Settings

pytestmark = pytest.mark.unit

SECRET = "the-fleet-secret-for-these-tests"


@pytest.mark.parametrize(
    "address", ["10.0.0.5:50051", "[2001:db8::5]:50051", "unix:/run/repogate/worker-0.sock", ""]
)
def test_an_id_routes_to_its_owner_for_its_tenant(address: str) -> None:
    ids = TransactionIds(SECRET, address=address)
    id_ = ids.mint("acme")

    assert TransactionIds(SECRET).route(id_, "acme") == Route(ids.tag, address)
    assert validate_transaction_id(id_) == id_  # within the x-transaction-id grammar


def test_an_id_with_the_longest_address_keeps_within_256_characters() -> None:
    id_ = TransactionIds(SECRET, address="unix:/" + "x" * (ADDRESS_MAX - 6)).mint("t" * 128)

    assert len(id_) <= 256
    assert validate_transaction_id(id_) == id_
    with pytest.raises(ValueError, match="at most"):
        TransactionIds(SECRET, address="x" * (ADDRESS_MAX + 1)).mint("acme")


def test_ids_differ_each_time() -> None:
    ids = TransactionIds(SECRET, address="10.0.0.5:50051")

    assert len({ids.mint("acme") for _ in range(100)}) == 100


def _swap(id_: str, index: int, part: str) -> str:
    parts = id_.split(".")
    parts[index] = part
    return ".".join(parts)


def test_nothing_but_the_minted_id_for_its_tenant_routes() -> None:
    ids = TransactionIds(SECRET, address="10.0.0.5:50051")
    id_ = ids.mint("acme")
    elsewhere = base64.urlsafe_b64encode(b"169.254.169.254:80").rstrip(b"=").decode()
    refused = {
        "another tenant": (id_, "acme2"),
        "another key": (TransactionIds("another-secret-altogether").mint("acme"), "acme"),
        "address edited": (_swap(id_, 1, elsewhere), "acme"),
        "tag edited": (_swap(id_, 0, "00000000"), "acme"),
        "random part edited": (_swap(id_, 2, "A" * 24), "acme"),
        "mac cut short": (id_[:-2], "acme"),
        "mac missing": (id_.rpartition(".")[0], "acme"),
        "old format": (f"{ids.tag}.{'x' * 32}", "acme"),
        "empty tag": (_swap(id_, 0, ""), "acme"),
        "not base64": (_swap(id_, 3, "!!"), "acme"),
        "no dots": ("x" * 60, "acme"),
    }

    routed = {why: ids.route(candidate, tenant) for why, (candidate, tenant) in refused.items()}

    assert routed == dict.fromkeys(refused)


def test_the_key_is_not_the_page_token_key() -> None:
    # The same secret gives transaction ids and page tokens keys of their own.
    body = TransactionIds(SECRET, tag="abcd0123").mint("acme").rpartition(".")[0]
    with_raw_secret = hmac.new(SECRET.encode(), f"{body}\x00acme".encode(), hashlib.sha256)
    forged = f"{body}.{base64.urlsafe_b64encode(with_raw_secret.digest()[:16]).decode()}"

    assert TransactionIds(SECRET).route(forged.rstrip("="), "acme") is None


@pytest.mark.parametrize(
    ("bound", "kept"),
    [
        ("127.0.0.1:50051", True),
        ("10.1.2.3:7000", True),
        ("repogate-0.repogate.svc:50051", True),
        ("[::1]:50051", True),
        ("unix:/run/repogate.sock", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
    ],
)
def test_the_advertised_address_is_the_bound_one_with_a_wildcard_host_resolved(
    bound: str, kept: bool
) -> None:
    address = advertised(bound)

    if kept:
        assert address == bound
    else:
        host, _, port = address.rpartition(":")
        assert port == "50051"
        assert host.strip("[]") not in ("0.0.0.0", "::", "")


def test_this_hosts_address_is_one_it_can_bind() -> None:
    ip = host_address()
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, 0))  # raises unless the address is this host's


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"advertise_address": "no-port"}, "host:port or unix:"),
        ({"advertise_address": "host:99999"}, "host:port or unix:"),
        ({"advertise_address": "unix:"}, "socket path"),
        ({"advertise_address": "h:1" + "0" * ADDRESS_MAX}, "at most"),
        ({"peer_listen": ":50051"}, "host:port or unix:"),
        (
            {"workers": 2, "redis_url": "redis://r", "advertise_address": "unix:/x.sock"},
            re.escape("worker i advertises port + i"),
        ),
    ],
)
def test_bad_peer_addresses_are_settings_errors(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)  # type: ignore[arg-type]


def test_empty_peer_addresses_are_unset() -> None:
    settings = Settings(advertise_address="", peer_listen="")

    assert (settings.advertise_address, settings.peer_listen) == (None, None)


async def test_peers_keep_one_channel_per_address_and_drop_the_least_recently_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(peers_module, "MAX_CHANNELS", 2)
    peers = Peers()
    try:
        first = peers.method("127.0.0.1:1", "/s/M")
        second = peers.method("127.0.0.1:2", "/s/M")
        same = peers.method("127.0.0.1:1", "/s/M")  # used again: the second is now the oldest
        peers.method("127.0.0.1:3", "/s/M")  # one too many: the second goes
        kept = peers.method("127.0.0.1:1", "/s/M")
        redialled = peers.method("127.0.0.1:2", "/s/M")
    finally:
        await peers.close()

    assert same is first
    assert kept is first
    assert redialled is not second
