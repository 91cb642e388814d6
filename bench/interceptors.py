"""The interceptors group of `python -m bench`: a cached GetUser served with tracing
(OTLP, a tenth of new traces), metrics and the access log all on, against the main
server with them off, alternating; then each alone, and tracing at every call; with
`--instructions`, the pair counted in instructions under callgrind too."""

from __future__ import annotations

import urllib.request

from bench import callgrind, h2load
from bench.report import Row, judge
from bench.run import RESULTS, TENANT, Bench, by_cpu, env_for
from bench.scenarios import H2Scenario, Target, run_h2load
from repogate.v1 import user_pb2

# What "interceptors on" turns on, each alone and then all together.
OTLP = {"REPOGATE_TRACE_EXPORTER": "otlp", "REPOGATE_OTLP_ENDPOINT": "http://{sink}"}
# The production advice of docs/observability.md: keep a tenth of the traces that start here, and
# follow the caller's decision for the rest (h2load's calls carry no traceparent).
SAMPLED = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
ONE_AT_A_TIME = (
    ("tracing (OTLP, 10 % of new traces)", OTLP | SAMPLED),
    ("metrics", {"REPOGATE_METRICS_LISTEN": "127.0.0.1:{port}"}),
    ("access log", {"REPOGATE_ACCESS_LOG": "true"}),
)
# Measured alone, for what tracing every call costs.
ALONE = (
    ("tracing (OTLP, every call)", OTLP),
    ("tracing (console exporter, every call)", {"REPOGATE_TRACE_EXPORTER": "console"}),
)


def scenarios(bench: Bench, main: Target) -> None:
    sink = bench.start_otlp_sink()
    try:
        _measure(bench, main, sink.address)
    finally:
        bench.stop(sink)


def _measure(bench: Bench, main: Target, sink: str) -> None:
    everything = env_for(
        {key: value for _, env in ONE_AT_A_TIME for key, value in env.items()}, sink
    )
    metrics = everything["REPOGATE_METRICS_LISTEN"]
    on = bench.start_repogate("repogate-interceptors-on", everything)
    hit = bench.get_request(bench.ids.hit)
    get = "repogate.v1.UserService/GetUser"
    offs: list[Row] = []
    ons: list[Row] = []
    for _ in range(bench.args.repeat):
        offs.append(
            run_h2load(
                H2Scenario("GetUser hit, interceptors off", get, hit, TENANT), main, bench.load
            )[0]
        )
        ons.append(
            run_h2load(
                H2Scenario("GetUser hit, interceptors on", get, hit, TENANT), on, bench.load
            )[0]
        )
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as reply:
        scraped = len(reply.read())
    bench.stop(on)
    off_row = bench.add(by_cpu(offs), "off")
    on_row = bench.add(by_cpu(ons))
    judge(on_row, off_row, "cpu", 1.10)
    on_row.notes.append(
        "on: tracing (OTLP/gRPC to a local sink, 10 % of new traces), Prometheus metrics "
        f"(/metrics scraped once at the end: {scraped:,} bytes), "
        "JSON access log (on stderr, to the server's log file)"
    )
    for row, runs in ((off_row, offs), (on_row, ons)):
        p50s = ", ".join(f"{r.p50_ms:.2f}" for r in runs if r.p50_ms is not None)
        cpus = ", ".join(f"{r.server_cpu_us:.0f}" for r in runs if r.server_cpu_us is not None)
        row.notes.append(
            f"median of {len(runs)} alternating runs by server CPU ({cpus} us/op); p50s {p50s} ms"
        )
    if bench.args.instructions:
        on_row.notes.append(_instructions(bench, everything, hit))
    if bench.args.smoke:  # the pair alone: each interceptor's row is a server more
        return
    for i, (name, env) in enumerate((*ONE_AT_A_TIME, *ALONE)):
        alone = bench.start_repogate(f"repogate-{i}-{name.split()[0]}", env_for(env, sink))
        row, _ = run_h2load(
            H2Scenario(f"GetUser hit, {name} only", get, hit, TENANT), alone, bench.load
        )
        bench.stop(alone)
        judge(bench.add(row), off_row, "cpu")


def _instructions(bench: Bench, on: dict[str, str], request: user_pb2.GetUserRequest) -> str:
    """The interceptors row in instructions: a server with them off and one with them
    on, each under callgrind, counted over the same number of GetUser calls."""
    counted: dict[str, callgrind.Counted] = {}
    calls = bench.args.instructions
    for name, env in (("off", {}), ("on", on)):
        out = RESULTS / f"callgrind-interceptors-{name}"
        target = bench.start_repogate(f"repogate-counted-{name}", env, counted=out)
        counter = callgrind.Counter(target.server.proc.pid, out)
        url = f"http://{target.address}/repogate.v1.UserService/GetUser"
        load = h2load.Load(bench.load.clients, bench.load.streams, requests=calls)
        headers = [f"x-tenant-id: {TENANT}"]
        body = h2load.frame(request)
        counted[name] = callgrind.count_calls(name, counter, url, body, headers, load)
        bench.stop(target)
    rate = callgrind.idle_rate([each.idle for each in counted.values()])
    per_call = {name: each.per_call(rate) for name, each in counted.items()}
    return (
        f"instructions per call under callgrind ({calls:,} calls each): "
        f"on {per_call['on']:,.0f}, off {per_call['off']:,.0f}: "
        f"{per_call['on'] / per_call['off']:.3f}"
    )
