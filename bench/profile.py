"""Where a server spends its CPU: py-spy samples during a scenario, summarised.

py-spy's raw format is one collapsed stack per line, `frame;frame;...;frame count`,
outermost first, each frame `function (path:line)`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r":\d+\)$")
_PREFIXES = ("site-packages/", "lib/python3", "/work/", "main/")


def available() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Starts sampling `pid` (and its children) for `seconds` into a raw file at `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        available() or "py-spy",
        "record",
        "--pid",
        str(pid),
        "--duration",
        f"{seconds:g}",
        "--rate",
    ]
    argv += [str(rate), "--format", "raw", "--nonblocking", "--subprocesses", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def frame_name(frame: str) -> str:
    """'f (/x/site-packages/sqlalchemy/engine/base.py:12)' -> 'f (sqlalchemy/engine/base.py)'."""
    frame = _LINE.sub(")", frame.strip())
    name, _, where = frame.partition(" (")
    for prefix in _PREFIXES:
        if prefix in where:
            where = where.split(prefix, 1)[1]
            if prefix == "lib/python3":
                where = "python3" + where
    return f"{name} ({where}" if where else name


# Frames that only carry the rest: the process's entry and the event loop's run().
# Samples that end in one of them ran native code (uvloop, and the grpc, asyncpg and
# protobuf extensions called from the loop) or sat in gRPC's poller thread.
HARNESS = {
    "Runner.run (asyncio/runners.py)": "[event loop: uvloop and native extensions]",
    "Thread.run (threading.py)": "[a thread's native code: gRPC's poller]",
}
_PLUMBING = ("<module> (", "main (server/cli.py)", "_run (server/cli.py)", "run (uvloop/")
_PLUMBING_THREAD = ("Thread._bootstrap", "Thread.run (")


@dataclass(frozen=True)
class Profile:
    samples: int
    self_time: list[tuple[str, float]]  # share of all samples, highest first
    by_package: list[tuple[str, float]]  # self time by the leaf frame's package
    inclusive: list[tuple[str, float]]


def package(frame: str) -> str:
    """'f (sqlalchemy/engine/base.py)' -> 'sqlalchemy'; harness frames keep their label."""
    if frame in HARNESS:
        return HARNESS[frame]
    where = frame.rpartition(" (")[2].rstrip(")")
    if where.startswith("python3"):
        return "stdlib"
    head = where.split("/", 1)[0]
    return head.removesuffix(".py") if "/" in where else "stdlib"


def summarise(raw: str, top: int = 10) -> Profile:
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    within: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if "(" in f and "process " not in f]
        if not frames:
            continue
        total += count
        leaf = HARNESS.get(frames[-1], frames[-1])
        own[leaf] += count
        packages[package(frames[-1])] += count
        for name in set(frames):
            if (
                not name.startswith(_PLUMBING)
                and name not in HARNESS
                and not name.startswith(_PLUMBING_THREAD)
            ):
                within[name] += count
    if not total:
        return Profile(0, [], [], [])

    def shares(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, count / total) for name, count in counter.most_common(n)]

    return Profile(total, shares(own, top), shares(packages, top), shares(within, top * 2))


def render(title: str, profile: Profile) -> str:
    lines = [f"{title}: {profile.samples} samples (on-CPU, all threads)", "  self time:"]
    lines += [f"    {share:6.1%}  {name}" for name, share in profile.self_time]
    lines.append("  self time by package:")
    lines += [f"    {share:6.1%}  {name}" for name, share in profile.by_package]
    lines.append("  inclusive (on the stack):")
    lines += [f"    {share:6.1%}  {name}" for name, share in profile.inclusive]
    return "\n".join(lines)
