"""One metrics endpoint for `serve --workers N`: the supervisor's, with every worker's
samples labelled by `worker`.

Why not prometheus_client's multiprocess mode: it merges what each process writes to
memory-mapped files, which carries counters and histograms but not what
server/metrics.py reads at scrape time from a worker's own memory (its pool, open
transactions, retries, cache counters, breaker states): those collectors have no file
to live in, and their gauges have no multiprocess mode that means anything summed.
It also needs a writable directory shared by the workers (the Pods in deploy/ have a
read-only root filesystem) and the files of a dead worker cleaned away.

So each worker serves its own registry, as a single server does, on a loopback port
the supervisor holds for it: bound with SO_REUSEPORT and never listening, so no other
program can take the port and connections reach only the worker, which binds it with
SO_REUSEPORT too. A worker that is started again gets the same port. When scraped,
the supervisor scrapes every worker (OpenMetrics, so nothing is lost in the round
trip) and answers with their families, each sample labelled with its worker.
Counters are not summed: a restarted worker starts its counters at zero, which
Prometheus reads as a reset of that worker's series, so rate() stays right, whereas a
sum would drop by what the dead worker had counted. `repogate_worker_up` says which
workers answered this scrape.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.request
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from server import metrics_http

log = logging.getLogger(__name__)

WORKER_LABEL = "worker"
# Seconds a worker has to answer; under Prometheus's default scrape timeout (10 s).
WORKER_TIMEOUT = 5.0


class WorkerMetrics:
    """The supervisor's endpoint on `listen`, and the private port of each worker."""

    def __init__(self, listen: str, workers: int) -> None:
        self._listen = listen
        self._workers = workers
        self._held: list[socket.socket] = []
        self._server: asyncio.Server | None = None
        self.address = ""  # host:port actually bound, once started

    async def start(self) -> None:
        self._held = [_hold_loopback_port() for _ in range(self._workers)]
        self._server, self.address = await metrics_http.serve(self._gather, self._listen)
        log.info(
            "metrics of %d workers on http://%s%s", self._workers, self.address, metrics_http.PATH
        )

    def worker_listen(self, index: int) -> str:
        """REPOGATE_METRICS_LISTEN for worker `index`."""
        return f"127.0.0.1:{self._held[index].getsockname()[1]}"

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for sock in self._held:
            sock.close()
        self._held = []

    async def _gather(self) -> Families:
        urls = [f"http://{self.worker_listen(i)}{metrics_http.PATH}" for i in range(self._workers)]
        texts = await asyncio.gather(*(asyncio.to_thread(_scrape, url) for url in urls))
        return Families(merge({str(i): text for i, text in enumerate(texts)}))


class Families:
    """Metric families gathered for one scrape, as a collector the encoders take."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merge(scrapes: Mapping[str, str | None]) -> list[Metric]:
    """The families of each worker's OpenMetrics text, every sample labelled with its
    worker, and `repogate_worker_up`; None stands for a worker that did not answer."""
    families: dict[str, Metric] = {}
    up = GaugeMetricFamily(
        "repogate_worker_up",
        "1 when the worker answered this scrape, 0 when it did not (starting, or gone).",
        labels=[WORKER_LABEL],
    )
    for worker, text in scrapes.items():
        parsed = _parse(worker, text)
        up.add_metric([worker], 0 if parsed is None else 1)
        for family in parsed or ():
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit)
            )
            merged.samples.extend(
                sample._replace(labels={**sample.labels, WORKER_LABEL: worker})
                for sample in family.samples
            )
    return [*families.values(), up]


def _parse(worker: str, text: str | None) -> list[Metric] | None:
    if text is None:
        return None
    try:
        # prometheus_client's OpenMetrics parser is not annotated.
        return list(text_string_to_metric_families(text))  # type: ignore[no-untyped-call]
    except ValueError:
        log.warning("worker %s answered metrics that do not parse", worker, exc_info=True)
        return None


def _scrape(url: str) -> str | None:
    """One worker's metrics, or None when it does not answer in time (in a thread)."""
    request = urllib.request.Request(url, headers={"Accept": CONTENT_TYPE_LATEST})
    try:
        with urllib.request.urlopen(request, timeout=WORKER_TIMEOUT) as response:
            body: bytes = response.read()
    except OSError:  # refused while it starts, gone, or too slow
        return None
    return body.decode()


def _hold_loopback_port() -> socket.socket:
    """A loopback port held for a worker: bound with SO_REUSEPORT, never listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
    except OSError:
        sock.close()
        raise
    return sock
