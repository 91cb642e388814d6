"""Refusing to hand every tenant's data to the network without authentication."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.settings import Settings


def is_local(listen: str) -> bool:
    """Whether only this machine can connect: a unix socket, localhost or a loopback address."""
    if listen.startswith(("unix:", "unix-abstract:")):
        return True
    host = listen.rsplit(":", 1)[0].removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost, or empty (every interface)


def check_listen(s: Settings) -> None:
    """PermissionError when anyone who can reach `s.listen` (or `s.peer_listen`) could act
    for every tenant."""
    authenticated = bool(s.auth_kinds()) or s.tls_client_ca_file is not None
    if authenticated or s.allow_unauthenticated_network:
        return
    exposed = [a for a in (s.listen, s.peer_listen) if a is not None and not is_local(a)]
    if not exposed:
        return
    raise PermissionError(
        f"refusing to listen on {exposed[0]} without authentication: anyone who can reach it "
        "could act for every tenant. Set REPOGATE_AUTH_MODE (keys, jwt), or require client "
        "certificates (REPOGATE_TLS_CLIENT_CA_FILE), or, if only trusted peers can reach "
        "this address, REPOGATE_ALLOW_UNAUTHENTICATED_NETWORK=true"
    )
