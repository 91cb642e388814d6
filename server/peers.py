"""The other processes of a fleet: where they reach this one, and channels to them.

A process advertises one address to its peers (REPOGATE_ADVERTISE_ADDRESS); by
default its listen address, with a wildcard host replaced by the address this
host sends from on its default route. Channels to peers are made on first use,
one per address, and kept; with TLS on, peers dial each other with TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import OrderedDict
from typing import TYPE_CHECKING

import grpc
from grpc import aio

from server import tls

if TYPE_CHECKING:
    from server.settings import Settings

log = logging.getLogger("repogate.peers")

_WILDCARDS = frozenset(("", "0.0.0.0", "::", "*"))
# Documentation addresses (RFC 5737, RFC 3849): a UDP socket "connected" to one
# sends nothing, and says which local address the default route would send from.
_PROBES = ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1"))
# Channels kept at most; the least recently used beyond are closed (peers come and
# go as a fleet is redeployed, and each new one has a new address).
MAX_CHANNELS = 64
# How long a closed channel's calls still in flight get to finish.
CLOSE_GRACE = 30.0


def advertised(bound: str) -> str:
    """The address to advertise for `bound` (host:port with its port resolved, or
    unix:path): itself, a wildcard host replaced by this host's address."""
    if bound.startswith("unix:"):
        return bound
    host, _, port = bound.rpartition(":")
    bare = host.removeprefix("[").removesuffix("]")
    if bare not in _WILDCARDS:
        return bound
    ip = host_address(prefer_ipv6=":" in bare)
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def host_address(*, prefer_ipv6: bool = False) -> str:
    """This host's address on its default route; else its name's; else loopback."""
    probes = reversed(_PROBES) if prefer_ipv6 else _PROBES
    for family, probe in probes:
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))
            return str(sock.getsockname()[0])
    with contextlib.suppress(OSError):
        return socket.gethostbyname(socket.gethostname())
    return "127.0.0.1"


def credentials(s: Settings) -> grpc.ChannelCredentials | None:
    """How peers dial each other over TCP: plaintext without TLS; with it, trusting
    REPOGATE_TLS_PEER_CA_FILE, else REPOGATE_TLS_CLIENT_CA_FILE, else the system's
    roots, and presenting this process's own certificate (mutual TLS asks for one).
    ValueError if the files do not hold them."""
    if s.tls_cert_file is None or s.tls_key_file is None:
        return None
    roots_file, variable = (
        (s.tls_peer_ca_file, "REPOGATE_TLS_PEER_CA_FILE")
        if s.tls_peer_ca_file is not None
        else (s.tls_client_ca_file, "REPOGATE_TLS_CLIENT_CA_FILE")
    )
    cert, key, roots = tls.read_checked(s.tls_cert_file, s.tls_key_file, roots_file, variable)
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=cert
    )


class Rotating:
    """The certificate peers are dialled with, and the CA they are checked against, read
    again on reload (server/reload.py): later calls dial with them on new channels."""

    def __init__(self, s: Settings, peers: Peers) -> None:
        self._settings = s
        self._peers = peers
        candidates = (s.tls_cert_file, s.tls_key_file, s.tls_peer_ca_file or s.tls_client_ca_file)
        self.files = tuple(path for path in candidates if path is not None)

    def reload(self) -> None:
        self._peers.use(credentials(self._settings))


class Peers:
    """Channels to peers, one per address, with a callable per method on each."""

    def __init__(
        self, credentials: grpc.ChannelCredentials | None = None, max_message_bytes: int = 0
    ) -> None:
        self._credentials = credentials
        self._options: list[tuple[str, int]] = []
        if max_message_bytes:
            self._options = [
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ]
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def use(self, credentials: grpc.ChannelCredentials | None) -> None:
        """Dials peers with `credentials` from now on; the channels made before are closed,
        their calls in flight given CLOSE_GRACE to finish."""
        self._credentials = credentials
        retired = list(self._peers.values())
        self._peers.clear()
        for peer in retired:
            self._retire(peer.channel)

    def _retire(self, channel: aio.Channel) -> None:
        task = asyncio.create_task(channel.close(CLOSE_GRACE))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def method(self, address: str, method: str) -> aio.UnaryUnaryMultiCallable:
        """`method` at the peer at `address`, bytes in and bytes out."""
        peer = self._peers.pop(address, None)
        if peer is None:
            peer = _Peer(self._dial(address))
        self._peers[address] = peer  # the most recently used last
        while len(self._peers) > MAX_CHANNELS:
            _, oldest = self._peers.popitem(last=False)
            self._retire(oldest.channel)
        return peer.method(method)

    def _dial(self, address: str) -> aio.Channel:
        # A Unix socket is this host's, in a directory only this user can open.
        if self._credentials is None or address.startswith("unix:"):
            return aio.insecure_channel(address, options=self._options)
        return aio.secure_channel(address, self._credentials, options=self._options)

    async def close(self) -> None:
        peers = list(self._peers.values())
        self._peers.clear()
        for peer in peers:
            await peer.channel.close()
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)


class _Peer:
    def __init__(self, channel: aio.Channel) -> None:
        self.channel = channel
        self._methods: dict[str, aio.UnaryUnaryMultiCallable] = {}

    def method(self, method: str) -> aio.UnaryUnaryMultiCallable:
        found = self._methods.get(method)
        if found is None:
            # No serializers: bytes in, bytes out.
            found = self._methods[method] = self.channel.unary_unary(method)
        return found
