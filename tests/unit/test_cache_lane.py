"""Replies of the pipelined Redis connection matched to their commands, however the
bytes are cut into reads. The socket is the edge: a transport that records writes."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from server.cache.lane import _pack, _Replies

REPLIES = b"$3\r\nabc\r\n$-1\r\n:42\r\n+OK\r\n-ERR bad\r\n$0\r\n\r\n$4\r\na\r\nb\r\n:-7\r\n"
EXPECTED = [b"abc", None, 42, b"OK", "ERR bad", b"", b"a\r\nb", -7]


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


class _Writer:
    def __init__(self) -> None:
        self.transport = _Transport()


def _replies() -> tuple[_Replies, _Transport]:
    writer = _Writer()
    return _Replies(writer, 60), writer.transport  # type: ignore[arg-type]


def _outcome(future: asyncio.Future[object]) -> object:
    exc = future.exception()
    if exc is None:
        return future.result()
    assert isinstance(exc, ResponseError)
    return str(exc)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, len(REPLIES)])
async def test_replies_cut_anywhere_reach_their_commands_in_order(size: int) -> None:
    replies, _ = _replies()
    futures = [replies.send(b"") for _ in EXPECTED]
    for start in range(0, len(REPLIES), size):
        replies.data_received(REPLIES[start : start + size])
    assert [_outcome(future) for future in futures] == EXPECTED


async def test_commands_sent_in_one_turn_leave_in_one_write() -> None:
    replies, transport = _replies()
    replies.send(_pack(("GET", "a")))
    replies.send(_pack(("EVALSHA", "f" * 40, 1, "a", b"v")))
    assert transport.written == []  # not yet: at the end of this turn
    await asyncio.sleep(0)
    assert transport.written == [
        b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n"
        b"*5\r\n$7\r\nEVALSHA\r\n$40\r\n" + b"f" * 40 + b"\r\n$1\r\n1\r\n$1\r\na\r\n$1\r\nv\r\n"
    ]


@pytest.mark.parametrize("stray", [b"*1\r\n$1\r\na\r\n", b"$x\r\n", b"_\r\n"])
async def test_a_reply_out_of_step_fails_everything_and_closes(stray: bytes) -> None:
    replies, transport = _replies()
    future = replies.send(b"")
    replies.data_received(stray)
    assert isinstance(future.exception(), RedisConnectionError)
    assert replies.lost
    assert transport.closed


async def test_a_reply_no_command_waits_for_closes_the_connection() -> None:
    replies, transport = _replies()
    future = replies.send(b"")
    replies.data_received(b"+OK\r\n+OK\r\n")
    assert future.result() == b"OK"
    assert replies.lost
    assert transport.closed
