"""`python -m bench`'s options, and the smoke run's defaults."""

from __future__ import annotations

import argparse

from bench import callgrind

DESCRIPTION = "The whole benchmark, from an empty bench database to the report."

GROUPS = (
    "get",
    "list",
    "write",
    "tx",
    "forward",
    "declared",
    "coherence",
    "interceptors",
    "soak",
    "workers",
)
# The main rows, about a second each on a small seed: whether the benchmark still runs
# and answers right (CI's `make bench-smoke`), not how fast. Explicit options win.
SMOKE_GROUPS = ("get", "list", "write", "tx", "interceptors")
SMOKE = {
    "seconds": 1.0,
    "users": 2_000,
    "tenants": 4,
    "deep_pages": 5,
    "repeat": 1,
    "warmup": 100,
    "soak": 0.0,
    "only": ",".join(SMOKE_GROUPS),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    smoke_sets = ", ".join("--" + key.replace("_", "-") for key in SMOKE)
    parser = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the main rows for about a second each on a small seed, ratios without verdicts; "
        f"fails only when a scenario does (sets {smoke_sets})",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per scenario (default 5)")
    parser.add_argument(
        "--soak", type=float, default=30.0, help="seconds of steady load (600: the 10-minute soak)"
    )
    parser.add_argument("--soak-rps", type=float, default=300.0, help="GetUser calls/s in the soak")
    parser.add_argument("--clients", type=int, default=8, help="h2load connections")
    parser.add_argument("--streams", type=int, default=4, help="h2load streams per connection")
    parser.add_argument(
        "--warmup", type=int, default=500, help="h2load requests before each measured run"
    )
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--deep-pages", type=int, default=1000)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="alternations: list pages, writes vs baselines, interceptors on/off, 1/2 workers",
    )
    parser.add_argument("--pool-size", type=int, default=10, help="per server process")
    parser.add_argument(
        "--invalidation-rate",
        type=float,
        default=200.0,
        help="UpdateUser calls/s through another process while the coherence group reads",
    )
    parser.add_argument(
        "--staleness-writes", type=int, default=200, help="writes the staleness row times"
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after measuring, sample Repogate with py-spy (.venv/bin/pip install py-spy) "
        "this long in each of GetUser miss and hit, the deep ListUsers page, CreateUser "
        "and BatchCreateUsers; raw stacks and summaries go to bench/results/",
    )
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="repogate_bench", help="created, then dropped")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra REPOGATE_* setting for every Repogate started (repeatable)",
    )
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"comma-separated groups of {', '.join(GROUPS)}"
    )
    parser.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="CALLS",
        help="also count the interceptors row in instructions under callgrind, CALLS calls "
        "each with them off and on (bench/callgrind.py; about six minutes for 1500)",
    )
    smoke, _ = parser.parse_known_args(argv)
    if smoke.smoke:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args(argv)
    if args.instructions and callgrind.available() is None:
        parser.error("--instructions needs valgrind: apt-get install valgrind")
    args.groups = {group.strip() for group in args.only.split(",") if group.strip()}
    unknown = args.groups - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups: {', '.join(sorted(unknown))}")
    return args
