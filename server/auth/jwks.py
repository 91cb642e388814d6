"""Keys from a JSON Web Key Set (REPOGATE_JWT_JWKS_URL), as an identity provider publishes them;
or from the set its OpenID Connect discovery document names (REPOGATE_JWT_OIDC_DISCOVERY).

The set is fetched when first needed and kept for `ttl` seconds; a token naming a
key (`kid`) the set lacks fetches it again at once, so that a key the provider has
just rotated in verifies, unless the set was fetched less than `refetch_interval`
ago, so that tokens with made-up kids cannot make every call a fetch. A fetch that
fails keeps the keys already known (and logs why), and is tried again only after
`refetch_interval`. Each key's algorithm comes from the key (its `alg`, or
its type and curve), never from the token.

Fetching runs in a thread (urllib), once per refresh, not per call: a call whose key is
known waits for nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt

from repositories.errors import Unauthenticated

log = logging.getLogger("repogate.auth")

# Seconds a fetch of the key set may take.
FETCH_TIMEOUT = 5.0
# Largest key set read, in bytes: an IdP's is a few KiB.
MAX_BYTES = 1024 * 1024


def fetch(url: str) -> Any:
    """The JSON document at `url` (blocking: run it in a thread)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as reply:
        return json.loads(reply.read(MAX_BYTES))


class Jwks:
    """A KeySource (server/auth/tokens.py) over a JSON Web Key Set."""

    def __init__(
        self,
        url: str | None,
        ttl: float = 300.0,
        refetch_interval: float = 10.0,
        fetcher: Callable[[str], Any] = fetch,
        clock: Callable[[], float] = time.monotonic,
        issuer: str | None = None,
    ) -> None:
        """`url` None: the `jwks_uri` of `issuer`'s OpenID Connect discovery document."""
        if url is None and issuer is None:
            raise ValueError("a JWKS needs its URL or an issuer to discover it from")
        self.url = url
        self._issuer = issuer
        self._discovered = url is None
        self._ttl = ttl
        self._refetch_interval = refetch_interval
        self._fetch = fetcher
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._tried_at: float | None = None  # last attempt, successful or not
        self._lock: asyncio.Lock | None = None
        self.files: tuple[Path, ...] = ()  # nothing to watch: the set is fetched

    async def key_for(self, token: str) -> tuple[Any, str]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token is malformed", reason="CREDENTIALS_INVALID") from exc
        if not isinstance(kid, str | None):
            raise Unauthenticated("the token's kid is not a string", reason="CREDENTIALS_INVALID")
        stale = self._fetched_at is None or self._clock() - self._fetched_at >= self._ttl
        if stale and self._allows(self._tried_at):  # after a failure, not at every call
            await self._refresh(self._fetched_at)
        found = self._find(kid)
        if found is None and self._allows(self._tried_at):
            await self._refresh(self._fetched_at)
            found = self._find(kid)
        if found is None:
            raise Unauthenticated(
                "the token is signed with a key this server does not know (kid)",
                reason="CREDENTIALS_INVALID",
            )
        return found.key, found.algorithm_name

    def reload(self) -> None:
        """SIGHUP: the next call fetches the set again (and discovers its URL again)."""
        self._fetched_at = self._tried_at = None
        if self._issuer is not None and self._discovered:
            self.url = None

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if len(self._keys) == 1 and (kid is None or None in self._keys):
            # A set of one key, and the token or the key names none: nothing to match.
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def _allows(self, last: float | None) -> bool:
        """Whether a fetch last made at `last` may be made again."""
        return last is None or self._clock() - last >= self._refetch_interval

    async def _refresh(self, seen: float | None) -> None:
        """Fetches the set once, however many calls ask at the same time."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._fetched_at != seen:
                return  # another call fetched it while this one waited
            self._tried_at = self._clock()
            try:
                document = await asyncio.to_thread(self._fetch_set)
                keys = jwt.PyJWKSet.from_dict(document).keys
            except Exception as exc:  # any failure keeps the keys already known
                log.error(
                    "cannot fetch the JWKS at %s: %s; keeping %d keys",
                    self.url or f"the jwks_uri of {self._issuer}",
                    exc,
                    len(self._keys),
                )
                return
            self._keys = {key.key_id: key for key in keys}
            self._fetched_at = self._clock()

    def _fetch_set(self) -> Any:
        """The key set's document (in a thread), its URL discovered first if need be."""
        return self._fetch(self.url or self._discover())

    def _discover(self) -> str:
        """OpenID Connect Discovery 1.0: the issuer's configuration names its jwks_uri,
        and must name the same issuer (4.3), or another server's keys could be taken."""
        assert self._issuer is not None
        where = self._issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = self._fetch(where)
        if not isinstance(document, dict) or document.get("issuer") != self._issuer:
            raise ValueError(f"{where} names another issuer than REPOGATE_JWT_ISSUER")
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise ValueError(f"{where} has no jwks_uri URL")
        self.url = uri
        return uri
