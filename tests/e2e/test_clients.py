"""The Node, Go and Python example clients (clients/) against a real Repogate on a loopback port.

`make clients` installs the Node example's packages, builds the TypeScript package
(clients/node-package, tsc over buf generate's protobuf-es stubs), the Go example (when Debian's
Go packages are installed) and the repogate-client wheel (clients/python), whose example runs
with only the wheel's files ahead of anything else on its path. Without them these tests are
skipped, loudly, unless REPOGATE_TEST_REQUIRE_CLIENTS=1 (CI sets it), which makes them fail.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.e2e.support import StartRepogate, all_users

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "clients" / "node"
GO_DIR = ROOT / "clients" / "go"
GO_BINARY = GO_DIR / "build" / "repogate-example"
PYTHON_DIR = ROOT / "clients" / "python"
TS_DIR = ROOT / "clients" / "node-package"
REQUIRE_CLIENTS = os.environ.get("REPOGATE_TEST_REQUIRE_CLIENTS") == "1"
RUN_TIMEOUT = 120.0  # a bound on a hung client, not a measurement


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


def unavailable(reason: str) -> None:
    if REQUIRE_CLIENTS:
        pytest.fail(f"{reason} (REPOGATE_TEST_REQUIRE_CLIENTS=1)", pytrace=False)
    pytest.skip(f"{reason}: run `make clients`")


def node_command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        unavailable("clients/node has no node_modules")
    return [str(node), str(NODE_DIR / "example.mjs")]


def go_command() -> list[str]:
    if not GO_BINARY.is_file():
        unavailable(f"{GO_BINARY.relative_to(ROOT)} is not built (Go and its Debian packages)")
    sources = [GO_DIR / "example" / "main.go", *ROOT.glob("protos/repogate/**/*.proto")]
    stale = [p.name for p in sources if p.stat().st_mtime > GO_BINARY.stat().st_mtime]
    if stale:
        unavailable(f"{GO_BINARY.relative_to(ROOT)} is older than {', '.join(stale)}")
    return [str(GO_BINARY)]


def python_command() -> list[str]:
    wheels = sorted((PYTHON_DIR / "dist").glob("repogate_client-*.whl"))
    if not wheels:
        unavailable("clients/python has no wheel (clients/python/build.sh)")
    wheel = wheels[-1]
    sources = [
        *PYTHON_DIR.glob("src/repogate_client/*.py"),
        *ROOT.glob("protos/repogate/**/*.proto"),
    ]
    stale = [p.name for p in sources if p.stat().st_mtime > wheel.stat().st_mtime]
    if stale:
        unavailable(f"{wheel.relative_to(ROOT)} is older than {', '.join(stale)}")
    # The wheel's files alone (its dependencies, grpcio and protobuf, come from this venv).
    site = PYTHON_DIR / "dist" / "site"
    if not site.is_dir() or site.stat().st_mtime < wheel.stat().st_mtime:
        shutil.rmtree(site, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel],
            check=True,
        )
    return ["env", f"PYTHONPATH={site}", sys.executable, str(PYTHON_DIR / "example.py")]


def typescript_command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed")
    built = TS_DIR / "dist" / "example.js"
    if not built.is_file():
        unavailable("clients/node-package is not built (clients/node-package/build.sh)")
    sources = [*TS_DIR.glob("src/*.ts"), *ROOT.glob("protos/repogate/**/*.proto")]
    stale = [p.name for p in sources if p.stat().st_mtime > built.stat().st_mtime]
    if stale:
        unavailable(f"{built.relative_to(ROOT)} is older than {', '.join(stale)}")
    return [str(node), str(built)]


COMMANDS = {
    "node": node_command,
    "go": go_command,
    "python": python_command,
    "typescript": typescript_command,
}


async def run(command: list[str], address: str) -> Run:
    env = {**os.environ, "REPOGATE_ADDRESS": address}
    proc = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.mark.parametrize("client", sorted(COMMANDS))
async def test_example_runs_the_whole_flow(client: str, start_repogate: StartRepogate) -> None:
    command = COMMANDS[client]()
    repogate = await start_repogate()

    result = await run(command, repogate.app.address)

    assert result.code == 0, str(result)
    out = result.stdout
    assert f"{client} example: OK" in out, str(result)
    assert "ann, bob, cid in 2 pages" in out, str(result)
    assert "ETAG_MISMATCH" in out, str(result)
    assert "commit: fay exists" in out, str(result)
    assert "rollback: gus is absent" in out, str(result)
    assert re.search(r"reason INVALID_ARGUMENT, domain repogate\.dev, metadata .*request_id", out)
    assert "BadRequest user.email: must be an email address" in out, str(result)
    if client == "python":  # the wheel's stubs, not the server's generated/
        assert f"stubs from {PYTHON_DIR / 'dist' / 'site' / 'repogate' / 'v1'}" in out, str(result)
    # What the client did, seen through the Python stubs: fay committed, gus rolled back.
    tenant = re.search(r"tenant (\S+)", out)
    assert tenant is not None, str(result)
    users = await all_users(repogate.users, tenant.group(1))
    assert sorted(user.username for user in users) == ["ann", "bob", "cid", "dee", "eve", "fay"]
    assert next(u.display_name for u in users if u.username == "ann") == f"{client.title()} Ann B"


@pytest.mark.parametrize("client", sorted(COMMANDS))
async def test_example_fails_when_the_server_is_unreachable(client: str) -> None:
    command = COMMANDS[client]()
    with socket.socket() as sock:  # a loopback port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"

    result = await run(command, address)

    assert result.code != 0, str(result)
    assert "FAIL:" in result.stderr, str(result)
    assert "example: OK" not in result.stdout, str(result)


async def test_reflection_serves_the_error_detail_and_annotation_files(
    start_repogate: StartRepogate,
) -> None:
    """What a reflection client (buf curl, grpcurl) needs beyond the services: google.rpc's
    ErrorInfo and BadRequest by symbol, and the google/api files the protos import."""
    repogate = await start_repogate()
    stub = reflection_pb2_grpc.ServerReflectionStub(repogate.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="google.rpc.ErrorInfo"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="google.rpc.BadRequest"),
        reflection_pb2.ServerReflectionRequest(file_by_filename="google/api/field_behavior.proto"),
        reflection_pb2.ServerReflectionRequest(file_by_filename="google/api/resource.proto"),
    ]
    for request in requests:
        call = stub.ServerReflectionInfo(iter([request]), timeout=10)
        (response,) = [response async for response in call]
        assert response.HasField("file_descriptor_response"), (request, response.error_response)
        names = {
            descriptor_pb2.FileDescriptorProto.FromString(raw).name
            for raw in response.file_descriptor_response.file_descriptor_proto
        }
        wanted = request.file_by_filename or "google/rpc/error_details.proto"
        assert wanted in names, (request, names)


async def test_buf_curl_error_details_decode_with_the_documented_command(
    start_repogate: StartRepogate,
) -> None:
    """docs/clients.md: `buf curl` prints each detail base64-encoded on stderr; piped into
    scripts/details.py they read as ErrorInfo and BadRequest. buf finds the method by reflection."""
    buf = ROOT / "node_modules" / ".bin" / "buf"
    if not buf.is_file():
        unavailable("node_modules/.bin/buf is not installed (make buf)")
    repogate = await start_repogate()
    curl = [
        str(buf), "curl", "--protocol", "grpc", "--http2-prior-knowledge",
        "-H", "x-tenant-id: acme", "-d", '{"user": {"email": "not-an-email", "username": "ann"}}',
        f"http://{repogate.app.address}/repogate.v1.UserService/CreateUser",
    ]  # fmt: skip
    failed = await run(curl, repogate.app.address)
    assert failed.code != 0, str(failed)
    assert '"code": "invalid_argument"' in failed.stderr, str(failed)

    decode = [sys.executable, str(ROOT / "scripts" / "details.py")]
    proc = await asyncio.create_subprocess_exec(
        *decode, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    out, _ = await asyncio.wait_for(proc.communicate(failed.stderr.encode()), RUN_TIMEOUT)

    assert proc.returncode == 0, out.decode()
    text = out.decode()
    assert "google.rpc.ErrorInfo" in text, text
    assert '"reason": "INVALID_ARGUMENT"' in text, text
    assert "google.rpc.BadRequest" in text, text
    assert '"field": "user.email"' in text, text
