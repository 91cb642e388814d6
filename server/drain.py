"""The drain: on shutdown, calls already admitted finish and new ones are refused.

grpc.aio's `server.stop(grace)` closes the port and cancels every call its core has
received but not yet handed to a handler: under a burst most of the calls sent just
before SIGTERM answered CANCELLED, which clients do not retry. So Repogate stops in
two steps. First the drain closes: every Repogate call that reaches the request
interceptor after that is answered UNAVAILABLE `SHUTTING_DOWN` (clients retry it,
elsewhere), while the server keeps taking calls off its queue; calls admitted before
run to completion. Once none is left and no call has come for QUIET seconds (at most
LINGER seconds more: clients that keep calling should be told to go elsewhere), the
server itself stops. A call still running when the grace ends is cancelled and
answered UNAVAILABLE `SHUTTING_DOWN` too, its work rolled back.

What remains is gRPC's own race: a call that reaches the server in the instant its
port closes (it was sent before the client heard the server go) is CANCELLED by
gRPC's core. The quiet period makes that rare: it needs calls still coming then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from repositories.errors import Unavailable

log = logging.getLogger(__name__)

# Seconds without a new call (nor one finishing) after which the port may close: the
# calls queued in gRPC's core by then have reached the drain and been answered.
QUIET = 0.1
# Seconds the drain goes on refusing calls once none is in flight, however busy.
LINGER = 1.0
# Seconds calls cancelled at the end of the grace get to answer.
CUT_WAIT = 5.0


class ShuttingDown(Unavailable):
    """The server is stopping: retry the call (on another server, or once it is back)."""

    reason = "SHUTTING_DOWN"

    def __init__(self, *, cut: bool = False) -> None:
        super().__init__(
            "the server stopped before this call finished and cancelled its work: retry it "
            "(with its request_id, a write runs at most once)"
            if cut
            else "the server is shutting down and takes no new calls: retry on another server"
        )


class Drain:
    """Counts the calls in flight; once closed, refuses new ones."""

    def __init__(self) -> None:
        self._calls: set[asyncio.Task[object]] = set()
        self._cut: set[asyncio.Task[object]] = set()
        self._closed = False
        self._last = 0.0  # loop time of the last call admitted, refused or finished
        self._changed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    def admit(self) -> None:
        """Lets the running call in, or raises ShuttingDown once closed."""
        if self._closed:
            self._note()
            raise ShuttingDown()
        task = asyncio.current_task()
        if task is not None:
            self._calls.add(task)

    def leave(self) -> None:
        """The running call has finished."""
        task = asyncio.current_task()
        if task is not None:
            self._calls.discard(task)
        if self._closed:
            self._note()

    def cut(self) -> bool:
        """Whether the running call was cancelled because the grace ended."""
        return asyncio.current_task() in self._cut

    async def close(self, grace: float) -> None:
        """Refuses new calls from now on; returns once those in flight have finished and
        no call has come for QUIET seconds (or LINGER seconds have passed since), or when
        `grace` seconds are over, cancelling those still running."""
        loop = asyncio.get_running_loop()
        self._closed = True
        self._note()
        end = loop.time() + grace
        linger: float | None = None  # when refusing must end, once nothing is in flight
        while (now := loop.time()) < end:
            if self._calls:
                wait = end - now
            else:
                linger = now + LINGER if linger is None else linger
                quiet = self._last + QUIET
                if now >= min(quiet, linger):
                    return
                wait = min(quiet, linger, end) - now
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)
        if self._calls:
            log.warning("%d calls outlived the shutdown grace; cancelling them", len(self._calls))
            self._cut = set(self._calls)
            for task in self._cut:
                task.cancel()
            await asyncio.wait(self._cut, timeout=CUT_WAIT)

    def _note(self) -> None:
        self._last = asyncio.get_running_loop().time()
        self._changed.set()
