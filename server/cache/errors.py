"""The domain errors a cache backend raises, so both backends fail the same way."""

from __future__ import annotations

from repositories.errors import FailedPrecondition, Unavailable


class CacheUnavailable(Unavailable):
    """The cache backend cannot be reached or did not answer in time."""

    reason = "CACHE_UNAVAILABLE"

    def __init__(self) -> None:
        super().__init__("the cache is unavailable; retry later")


class NotInteger(FailedPrecondition):
    """Increment of a value that is not a decimal int64, or past the int64 range."""

    reason = "CACHE_VALUE_NOT_INTEGER"

    def __init__(self) -> None:
        super().__init__(
            "the value is not a decimal integer, or the increment would leave the int64 range"
        )


class CacheDegraded(CacheUnavailable):
    """Some nodes of a replicated Redis (cluster, Sentinel) are down or do not answer.
    Counted, never named: the message goes to clients."""

    def __init__(self, down: int, nodes: int, detail: str = "") -> None:
        message = f"{down} of {nodes} cache nodes are down or do not answer"
        Unavailable.__init__(self, f"{message}; {detail}" if detail else message)


class CacheMisconfigured(ValueError):
    """REPOGATE_REDIS_URL names a Redis that needs another URL form: refused at start."""
