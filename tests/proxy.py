"""A TCP proxy on loopback that a test closes and reopens (a database that goes away),
blackholes (a database behind a network that drops every packet), or slows (with
`reply_delay`: a database that answers slowly)."""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        # Cleared while blackholed: nothing is forwarded and no upstream connection made.
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0
        # Seconds each reply from the target waits before it is passed on.
        self.reply_delay = 0.0

    async def open(self) -> int:
        """Listens (again, on the same port once it has one); returns the port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def refuse(self) -> None:
        """Stops listening: new connections are refused, those made go on."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def close(self) -> None:
        """Stops listening and cuts every connection, as a database that dies would."""
        await self.refuse()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        self._flowing.set()  # connections held by a blackhole end now too

    def blackhole(self) -> None:
        """Keeps every connection open but forwards nothing either way; new connections
        are accepted and get no answer. The database answers nothing, as behind a
        network that drops its packets: no error, no reset, only silence."""
        self._flowing.clear()

    def restore(self) -> None:
        """Ends the blackhole: what was held back flows on, as TCP retransmits it once
        the path is back, and held connections reach the database."""
        self._flowing.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self._flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer, replies=True)
        )
        self._writers -= {writer, up_writer}

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool = False
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                if replies and self.reply_delay > 0:
                    await asyncio.sleep(self.reply_delay)
                writer.write(data)
                await writer.drain()
        writer.close()
