"""h2load as a gRPC load generator: pre-encoded frames, bounded runs, parsed results.

A gRPC request is an HTTP/2 POST with `content-type: application/grpc` and
`te: trailers` whose body is one frame: a flag byte (0: uncompressed), the message's
length as 4 big-endian bytes, then the message. h2load sends the same body on every
request and does not read trailers, so it cannot see a gRPC status: callers check a
request once before the run, and Repogate's own call counts after it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

from bench import stats

GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
_FINISHED = re.compile(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def frame(message: Message) -> bytes:
    """The gRPC length-prefixed frame of `message`, uncompressed."""
    payload = message.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


@dataclass(frozen=True)
class Load:
    """How hard to push: connections, streams per connection, and for how long."""

    clients: int = 8
    streams: int = 4
    seconds: float = 5.0
    requests: int = 0  # when set, a fixed count instead of a duration
    rps_per_client: float = 0.0  # 0: as fast as the server answers
    warmup: int = 500  # requests sent before a measured run (bench.scenarios.run_h2load)


@dataclass
class Result:
    done: int
    succeeded: int
    failed: int
    seconds: float
    rps: float
    latencies_us: list[float] = field(repr=False, default_factory=list)

    @property
    def p50_ms(self) -> float | None:
        value = stats.percentile(self.latencies_us, 50)
        return None if value is None else value / 1000

    @property
    def p99_ms(self) -> float | None:
        value = stats.percentile(self.latencies_us, 99)
        return None if value is None else value / 1000


def available() -> str | None:
    return shutil.which("h2load")


def version() -> str:
    out = subprocess.run(["h2load", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()


def command(url: str, body: Path, headers: list[str], load: Load, log: Path) -> list[str]:
    cmd = ["h2load", "-t", "1", "-c", str(load.clients), "-m", str(load.streams)]
    cmd += ["-d", str(body), "--log-file", str(log)]
    for header in (*GRPC_HEADERS, *headers):
        cmd += ["-H", header]
    if load.requests:
        cmd += ["-n", str(load.requests)]
    else:
        cmd += ["-D", f"{load.seconds:g}"]
    if load.rps_per_client:
        cmd += ["--rps", f"{load.rps_per_client:g}"]
    return [*cmd, url]


def start(url: str, body: bytes, headers: list[str], load: Load) -> Run:
    """Starts h2load; `Run.wait()` collects its result."""
    return Run(url, body, headers, load)


class Run:
    def __init__(self, url: str, body: bytes, headers: list[str], load: Load) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="repogate-bench-h2load-"))
        body_path = self._dir / "body.bin"
        body_path.write_bytes(body)
        self._log = self._dir / "requests.tsv"
        self.proc = subprocess.Popen(
            command(url, body_path, headers, load, self._log),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait(self, timeout: float) -> Result:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        try:
            if self.proc.returncode != 0:
                raise RuntimeError(f"h2load exited {self.proc.returncode}:\n{out}")
            return parse(out, self._log.read_text() if self._log.exists() else "")
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


def run(url: str, body: bytes, headers: list[str], load: Load) -> Result:
    limit = 60 + load.seconds * 2 if not load.requests else 600
    return start(url, body, headers, load).wait(timeout=limit)


def parse(out: str, log: str) -> Result:
    """h2load's summary plus its per-request log (start µs, HTTP status, duration µs)."""
    finished = _FINISHED.search(out)
    counts = _REQUESTS.search(out)
    if finished is None or counts is None:
        raise RuntimeError(f"cannot read h2load's output:\n{out}")
    seconds = float(finished[1]) * _UNITS[finished[2]]
    latencies = [float(line.split("\t")[2]) for line in log.splitlines() if line.count("\t") == 2]
    return Result(
        done=int(counts[3]),
        succeeded=int(counts[4]),
        failed=int(counts[5]) + int(counts[6]) + int(counts[7]),
        seconds=seconds,
        rps=float(finished[3]),
        latencies_us=latencies,
    )
