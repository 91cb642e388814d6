"""Instructions a server runs per call, counted by valgrind's callgrind.

CPU time per call drifts by a fifth between runs on a shared 2-core machine;
instructions do not: callgrind counts the same total for the same work whatever else
the machine is doing. A server runs under callgrind with instrumentation off (about
four times slower than native, so it starts and warms up in seconds), is switched on
for the measured calls only (fifty times slower), and dumps its count.

Under callgrind a call takes fifty times longer, so what a server does on a timer
(the change-log follower's polls, the pool's upkeep) weighs fifty times more against
each call than at full speed. `Counter.idle` counts that work with no load, and
`Counted.per_call` subtracts it at `idle_rate`, pooled over every idle window of both servers
of an A/B run: the work is the same code in both, and one window of a few seconds
catches a timer's run or not. What is left is the calls' own work, which the two
servers then compare. Work a server batches on a timer (the access log's lines, the
spans it exports) is spread over fewer calls a batch than at full speed, so it counts
a little more per call than it costs there. Cache misses and branch mispredictions,
which CPU time also pays, are not counted.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench import h2load


def available() -> str | None:
    return shutil.which("valgrind")


def wrap(argv: list[str], out: Path) -> list[str]:
    """`argv` run under callgrind with instrumentation off, its dumps `out`.<pid>.<n>.
    argv[0] must be the program itself, not a launcher script: callgrind does not follow
    what a script execs."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(f"{out.name}.*"):
        old.unlink()
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}.%p",
        *argv,
    ]


@dataclass(frozen=True)
class Window:
    instructions: int
    seconds: float


class Counter:
    """Switches callgrind's counting on and off in the process `pid` (`wrap`'s child)."""

    def __init__(self, pid: int, out: Path) -> None:
        self._pid = pid
        self._out = out
        self._started = 0.0

    def _control(self, *flags: str) -> None:
        subprocess.run(
            ["callgrind_control", *flags, str(self._pid)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    def start(self) -> None:
        """Counts from now, from zero."""
        self._control("--instr=on")
        self._control("--zero")
        self._started = time.monotonic()

    def stop(self) -> Window:
        """The instructions counted since `start`, and the seconds they took."""
        seconds = time.monotonic() - self._started
        before = set(self._dumps())
        self._control("--dump")
        self._control("--instr=off")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            fresh = [path for path in self._dumps() if path not in before]
            total = _totals(fresh[0]) if fresh else None
            if total is not None:
                return Window(total, seconds)
            time.sleep(0.2)
        raise RuntimeError(f"callgrind wrote no dump for pid {self._pid}")

    def idle(self, seconds: float) -> Window:
        """What the process runs by itself over `seconds` with no calls."""
        self.start()
        time.sleep(seconds)
        return self.stop()

    def _dumps(self) -> list[Path]:
        mine = f"{self._out.name}.{self._pid}"
        found = self._out.parent.glob(f"{mine}*")
        return sorted(
            path for path in found if path.name == mine or path.name.startswith(f"{mine}.")
        )


def _totals(path: Path) -> int | None:
    """The `totals:` (or `summary:`) line of a complete dump, None while it is written."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    return None


def idle_rate(idle: list[Window]) -> float:
    """Instructions a second over all of `idle`."""
    seconds = sum(window.seconds for window in idle)
    return sum(window.instructions for window in idle) / seconds if seconds else 0.0


@dataclass
class Counted:
    """A run's instructions: its calls' window and how many calls, and a window of the
    same server idle just after."""

    calls: Window
    count: int
    idle: Window

    def per_call(self, rate: float) -> float:
        """Instructions per call: the calls' window's, less `rate`'s share of it."""
        return (self.calls.instructions - rate * self.calls.seconds) / self.count


def count_calls(
    name: str, counter: Counter, url: str, body: bytes, headers: list[str], load: h2load.Load
) -> Counted:
    """One h2load run of `load.requests` calls counted, after a warm-up run with counting
    off, and as long a window idle (at most 20 s)."""
    h2load.run(url, body, headers, h2load.Load(load.clients, load.streams, requests=300))
    counter.start()
    result = h2load.run(url, body, headers, load)
    calls = counter.stop()
    if result.failed or not result.done:
        raise RuntimeError(f"{name}: {result.failed} of {result.done} calls failed")
    return Counted(calls, result.done, counter.idle(min(calls.seconds, 20.0)))
