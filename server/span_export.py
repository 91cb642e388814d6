"""OTLP/gRPC span export from the event loop: spans are batched, encoded
(server/otlp.py) and sent on the loop that served their calls, over a grpc.aio channel.

Not the SDK's BatchSpanProcessor and OTLP exporter: they encode and send in a thread of
their own over a second, synchronous gRPC stack, which cost more than the same encoder
run on the loop. Paired python -m bench.ab medians on the 2-core machine: a cached
GetUser traced at every call took 22 µs less server CPU sent from the loop (376 -> 353);
with a tenth of calls traced, metrics and the access log on, 5 µs less (287 -> 282).

What configures them configures this: OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_MAX_QUEUE_SIZE
and OTEL_BSP_MAX_EXPORT_BATCH_SIZE as the SDK's processor reads them, and the
exporter's endpoint, TLS, headers, compression, timeout and retryable codes
(OTEL_EXPORTER_OTLP_*) as the SDK's exporter reads them; a transient failure is
retried as that exporter retries it (up to 6 attempts, backoff 1, 2, 4 ... s with
jitter, or the delay the collector's RetryInfo asks for, within the timeout).

A batch is encoded a slice at a time, letting calls run in between; one batch is in
flight at a time; a full queue drops its oldest span (counted in `dropped`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import random
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc import aio
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from server import otlp

log = logging.getLogger("repogate.tracing")

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# As the SDK's exporter: attempts in all, and the trailer a collector asks a delay by.
ATTEMPTS = 6
_RETRY_INFO = "google.rpc.retryinfo-bin"
# Spans encoded between two turns of the event loop.
SLICE = 64


class _Configured(OTLPSpanExporter):
    """The SDK's exporter, for the configuration it reads; it opens no channel."""

    def _initialize_channel_and_stub(self) -> None:
        self._channel = None
        self._client = None


class OtlpSender:
    """Sends ExportTraceServiceRequests, as bytes, where the SDK's exporter would."""

    def __init__(self, endpoint: str | None = None) -> None:
        # Its attributes after it read the environment (they are not typed as parsed).
        config: Any = _Configured(endpoint=endpoint)
        self.endpoint: str = config._endpoint
        self._insecure: bool = config._insecure
        self._credentials: grpc.ChannelCredentials | None = config._credentials
        self._headers: tuple[tuple[str, str], ...] = tuple(config._headers or ())
        self._timeout: float = config._timeout
        self._compression: grpc.Compression = config._compression
        self._options: tuple[tuple[str, Any], ...] = tuple(config._channel_options)
        self._retryable: frozenset[grpc.StatusCode] = frozenset(config._retryable_error_codes)
        self._channel: aio.Channel | None = None
        self._export: Any = None
        self.failing = False
        # Set when closing: a retry waiting for its turn gives up.
        self._stopping = asyncio.Event()
        self.waiting = False  # for a retry

    def _open(self) -> None:
        if self._insecure:
            channel = aio.insecure_channel(
                self.endpoint, options=self._options, compression=self._compression
            )
        else:
            assert self._credentials is not None
            channel = aio.secure_channel(
                self.endpoint, self._credentials, self._options, self._compression
            )
        self._channel = channel
        self._export = channel.unary_unary(
            EXPORT, response_deserializer=ExportTraceServiceResponse.FromString
        )

    async def send(self, request: bytes) -> bool:
        """Whether the collector took `request`, retried as the SDK's exporter retries."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        for attempt in range(ATTEMPTS):
            if self._channel is None:
                self._open()
            try:
                await self._export(
                    request, metadata=self._headers, timeout=max(deadline - loop.time(), 0.001)
                )
            except aio.AioRpcError as error:
                backoff = _backoff(error, attempt)
                if error.code() is grpc.StatusCode.UNAVAILABLE and attempt == 0:
                    await self.close()  # as the SDK: reconnect from scratch
                if (
                    error.code() not in self._retryable
                    or attempt + 1 == ATTEMPTS
                    or backoff > deadline - loop.time()
                    or self._stopping.is_set()
                ):
                    self._failed(error)
                    return False
                self.waiting = True
                try:
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                except TimeoutError:
                    continue
                finally:
                    self.waiting = False
                self._failed(error)  # closing: as the SDK, no more attempts
                return False
            else:
                if self.failing:
                    self.failing = False
                    log.warning("exporting spans to %s again", self.endpoint)
                return True
        return False  # not reached: the last attempt returns

    def _failed(self, error: aio.AioRpcError) -> None:
        # Once per outage, not once per batch.
        if not self.failing:
            self.failing = True
            log.warning(
                "could not export spans to %s: %s %s; spans are dropped until it answers",
                self.endpoint,
                error.code().name,
                error.details(),
            )

    def stop_retrying(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()


def _backoff(error: aio.AioRpcError, attempt: int) -> float:
    """Seconds before the next attempt: what the collector asked for, else 2^attempt ±20 %."""
    for key, value in error.trailing_metadata() or ():
        if key == _RETRY_INFO and isinstance(value, bytes):
            info = error_details_pb2.RetryInfo.FromString(value)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return float(2**attempt * random.uniform(0.8, 1.2))


class LoopSpanProcessor(SpanProcessor):
    """Batches the sampled spans that end on the event loop and sends them from it."""

    def __init__(
        self,
        sender: OtlpSender,
        max_queue_size: int | None = None,
        schedule_delay_millis: float | None = None,
        max_export_batch_size: int | None = None,
    ) -> None:
        # The SDK's processor's defaults, from OTEL_BSP_*, and its checks of them.
        sdk: Any = BatchSpanProcessor
        queue = max_queue_size or sdk._default_max_queue_size()
        delay = schedule_delay_millis or sdk._default_schedule_delay_millis()
        batch = max_export_batch_size or sdk._default_max_export_batch_size()
        sdk._validate_arguments(queue, delay, batch)
        self._sender = sender
        self._queue: collections.deque[ReadableSpan] = collections.deque(maxlen=queue)
        self._delay = delay / 1000
        self._batch = batch
        self.dropped = 0
        self._worker: asyncio.Task[None] | None = None
        self._full: asyncio.Event | None = None
        self._closing = False
        # One batch in flight at a time, whoever sends it.
        self._sending = asyncio.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if self._closing or context is None or not context.trace_flags.sampled:
            return
        queue = self._queue
        if len(queue) == queue.maxlen:
            self.dropped += 1
        queue.append(span)
        if self._worker is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # not on a loop: the next span on one, or close(), sends it
            self._full = asyncio.Event()
            # In a context of its own, not the call's whose span ended first: its logs
            # and statements belong to no call.
            self._worker = loop.create_task(
                self._work(), name="span export", context=contextvars.Context()
            )
        elif len(queue) >= self._batch and self._full is not None:
            self._full.set()

    async def _work(self) -> None:
        assert self._full is not None
        while not self._closing:
            woken = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._delay)
                woken = True
            self._full.clear()
            # As the SDK's processor: a full batch wakes it to send the full batches; the
            # timer sends at least one batch, full or not.
            try:
                await self._send(at_least_one=not woken)
            except Exception:
                # A batch lost, never the worker: the spans after it are still sent.
                log.exception("could not export spans to %s", self._sender.endpoint)

    async def _send(self, at_least_one: bool = False, everything: bool = False) -> None:
        async with self._sending:
            await self._send_batches(at_least_one, everything)

    async def _send_batches(self, at_least_one: bool, everything: bool) -> None:
        queue = self._queue
        while queue and (at_least_one or everything or len(queue) >= self._batch):
            at_least_one = False
            groups: otlp.Groups = {}
            taken = 0
            while queue and taken < self._batch:
                otlp.group([queue.popleft()], groups)
                taken += 1
                if taken % SLICE == 0:
                    await asyncio.sleep(0)
            await self._sender.send(otlp.assemble(groups))

    async def flush(self) -> None:
        """Sends every span queued now."""
        await self._send(everything=True)

    async def close(self) -> None:
        """Sends what is queued and closes the channel; spans that end after are dropped.
        A batch waiting to be retried gives up."""
        self._closing = True
        self._sender.stop_retrying()
        worker, self._worker = self._worker, None
        if worker is not None:
            if self._full is not None:
                self._full.set()
            await worker
        await self._send(everything=True)
        await self._sender.close()

    def shutdown(self) -> None:
        self._closing = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Asks for what is queued to be sent now; it is sent on the event loop, so this
        cannot wait for it there (`close` does)."""
        if self._full is not None:
            self._full.set()
        return True
