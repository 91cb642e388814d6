"""The metrics endpoint: a minimal HTTP/1.1 server on the event loop, GET /metrics only.

On the loop rather than in prometheus-client's thread, so collectors read the
transaction registry and the pool from the thread that changes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

PATH = "/metrics"
# A scraper sends a short request at once; anything else is not waited for.
_READ_TIMEOUT = 5.0
_HEAD_MAX = 16 * 1024

# What is served: a registry, or what gathers one when a scrape arrives.
Source = Collector | Callable[[], Awaitable[Collector]]


async def serve(
    source: Source, listen: str, *, reuse_port: bool = False
) -> tuple[asyncio.Server, str]:
    """Serves `source` on `listen` (host:port; port 0 picks one); returns the server and
    the address bound. `reuse_port` binds a port another socket of ours holds."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            writer.write(await _answer(source, head))
            await writer.drain()
        except (
            TimeoutError,
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass  # a client that was slow, went away, or sent more than _HEAD_MAX
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(
        handle, host or None, int(port), limit=_HEAD_MAX, reuse_port=reuse_port
    )
    bound = server.sockets[0].getsockname()[1]
    return server, f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"


async def _answer(source: Source, head: bytes) -> bytes:
    lines = head.decode("latin-1").split("\r\n")
    method, target, *_ = [*lines[0].split(" "), "", ""]
    headers = dict(_header(line) for line in lines[1:] if ":" in line)
    if target.partition("?")[0] != PATH:
        return _response("404 Not Found", "text/plain", b"metrics are at /metrics\n")
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", "text/plain", b"GET only\n")
    collector = await source() if callable(source) else source
    encode, content_type = choose_encoder(headers.get("accept", ""))
    body = encode(collector)
    return _response("200 OK", content_type, b"" if method == "HEAD" else body, len(body))


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip().lower(), value.strip()


def _response(status: str, content_type: str, body: bytes, length: int | None = None) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
