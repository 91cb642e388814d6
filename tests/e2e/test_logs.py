"""A real `repogate serve`'s log stream: every line of stderr is JSON (the server's own
lines and the access lines), and each access line of a traced call joins the span the
console exporter wrote to stdout by trace_id and span_id."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from repogate.v1 import user_pb2, user_pb2_grpc
from tests.cache_support import CLOSED_REDIS_URL
from tests.e2e.test_cli import REPOGATE, RPC_TIMEOUT, Server, _kill, cli_env, wait_serving
from tests.rpc import md

pytestmark = pytest.mark.e2e

KEY = f"rg_{secrets.token_urlsafe(24)}"
CALLERS_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{CALLERS_TRACE}-00f067aa0ba902b7-01"
ACCESS = "repogate.access"


class Run:
    """A running server, and what it wrote: stderr (logs) and stdout (spans)."""

    def __init__(self, cwd: Path, server: Server) -> None:
        self.spans = cwd / "stdout.log"
        self.server = server
        self.address = server.address

    async def stop(self) -> None:
        """SIGTERM: the server drains, flushes its access lines and exports its spans."""
        assert await self.server.stop() == 0, self.server.output()

    def log_lines(self) -> list[dict[str, Any]]:
        """Every line of the log stream, parsed: a line that is not JSON fails the test."""
        return [json.loads(line) for line in self.server.output().splitlines()]

    def span_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.spans.read_text().splitlines()]


@pytest.fixture
async def run(tmp_path: Path, tenant: str) -> AsyncIterator[Run]:
    """`repogate serve` with API keys, the console span exporter, and a Redis that is
    down (its calls fail, and the server logs so while calls are served)."""
    keys = tmp_path / "keys.json"
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    keys.write_text(json.dumps({"keys": {"billing": {"sha256": digest, "tenants": [tenant]}}}))
    env = cli_env(
        tmp_path,
        trace_exporter="console",
        auth_mode="keys",
        api_keys_file=str(keys),
        redis_url=CLOSED_REDIS_URL,
    )
    logs = tmp_path / "stderr.log"
    with logs.open("wb") as err, (tmp_path / "stdout.log").open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(REPOGATE),
            "serve",
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    server = Server(proc, env["REPOGATE_LISTEN"], logs)
    try:
        await wait_serving(server)
        yield Run(tmp_path, server)
    finally:
        await _kill(proc)


async def calls(address: str, tenant: str) -> None:
    """A call that joins its caller's trace, two that start one, one refused."""
    key = ("authorization", f"ApiKey {KEY}")
    async with aio.insecure_channel(address) as channel:
        users = user_pb2_grpc.UserServiceStub(channel)
        created = await users.CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(email="log@example.com", username="l")),
            metadata=(*md(tenant, traceparent=TRACEPARENT), key),
            timeout=RPC_TIMEOUT,
        )
        await users.GetUser(
            user_pb2.GetUserRequest(id=created.id), metadata=(*md(tenant), key), timeout=RPC_TIMEOUT
        )
        with pytest.raises(aio.AioRpcError) as missing:
            await users.GetUser(
                user_pb2.GetUserRequest(id=str(uuid.uuid4())),
                metadata=(*md(tenant), key),
                timeout=RPC_TIMEOUT,
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(aio.AioRpcError) as refused:
            await users.ListUsers(user_pb2.ListUsersRequest(), metadata=md(tenant))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_every_line_is_json_and_access_lines_join_their_spans(run: Run, tenant: str) -> None:
    await calls(run.address, tenant)
    await run.stop()

    lines = run.log_lines()
    spans = {
        (span["context"]["trace_id"], span["context"]["span_id"]): span for span in run.span_lines()
    }
    access = [line for line in lines if line["logger"] == ACCESS]
    own = [line for line in lines if line["logger"] != ACCESS]

    assert [line["method"].rsplit("/", 1)[1] for line in access] == [
        "CreateUser",
        "GetUser",
        "GetUser",
        "ListUsers",
    ]
    for line in access:
        span = spans[(f"0x{line['trace_id']}", f"0x{line['span_id']}")]
        assert span["name"] == line["method"].lstrip("/")
        assert span["kind"] == "SpanKind.SERVER"
        assert line["peer"].startswith("ipv4:127.0.0.1:")
    # The first call joined its caller's trace; the others are traces the server began.
    assert access[0]["trace_id"] == CALLERS_TRACE
    assert CALLERS_TRACE not in {line["trace_id"] for line in access[1:]}
    assert [line.get("caller") for line in access] == ["key:billing"] * 3 + [None]
    assert [line["code"] for line in access] == ["OK", "OK", "NOT_FOUND", "UNAUTHENTICATED"]
    # The server's own lines: its start, and what it logged while serving a call (the
    # cache being down), with that call's ids.
    assert any(line["message"].startswith("repogate listening on") for line in own)
    during = [line for line in own if "trace_id" in line]
    assert during
    traced = {(line["trace_id"], line["span_id"]) for line in access}
    for line in during:
        assert (line["trace_id"], line["span_id"]) in traced
        assert line["tenant"] == tenant
        assert {"time", "level", "logger", "message", "request_id"} <= set(line)
