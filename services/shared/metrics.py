"""Prometheus metrics of the HTTP services, correct with any number of granian workers.

granian runs each HTTP service as worker processes of one main process (``--workers N``), and a scrape of
``/metrics`` reaches any one of them. So the services use prometheus-client's multiprocess mode: every worker
writes its values to memory-mapped files in one folder, and whichever worker answers a scrape adds up all of
them. The folder belongs to one run of the service and is set in the environment before granian starts
(``PROMETHEUS_MULTIPROC_DIR``, by ``shipskip serve``: services/shared/metrics_folder.py). A worker that dies and is
replaced keeps its counts in the sum (counters never go back), while its gauges are dropped (the ``live*`` modes) at
the next scrape.

The projector is one process: it keeps its metrics in memory (``CollectorRegistry``) and needs none of this.
"""

import contextlib
import importlib.metadata
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from services.shared.metric_buffer import MetricBuffer, histograms_of
from services.shared.metrics_folder import alive

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Prometheus text format, version 0.0.4."""

_LIVE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


class _WorkersCollector(Collector):
    """Every worker's values from the run's files, with the buffered histograms as histograms (metric_buffer.py)."""

    def __init__(self, folder: Path) -> None:
        self._files = MultiProcessCollector(None, path=str(folder))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        return histograms_of(self._files.collect())  # type: ignore[no-untyped-call]


class WorkersExposition:
    """The text of ``/metrics``: every worker's values of this run, added up."""

    def __init__(self, folder: Path, buffer: MetricBuffer, refresh: Callable[[], None] | None = None) -> None:
        self._folder = folder
        self._buffer = buffer
        self._refresh = refresh
        """Brings this worker's sampled gauges up to date before a scrape."""
        self._registry = CollectorRegistry()
        self._registry.register(_WorkersCollector(folder))

    def render(self) -> bytes:
        if self._refresh is not None:
            self._refresh()
        self._buffer.flush()  # this worker's counts exactly; the others' as of their last flush
        self._forget_dead_workers()
        return generate_latest(self._registry)

    def _forget_dead_workers(self) -> None:
        """Drop the gauges of workers that are gone (a worker granian replaced); their counters stay counted."""
        with contextlib.suppress(OSError):
            for name in os.listdir(self._folder):
                match = _LIVE_FILE.fullmatch(name)
                if match is not None and not alive(int(match.group(1))):
                    mark_process_dead(int(match.group(1)), str(self._folder))  # type: ignore[no-untyped-call]


def render_registry(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def build_info(service: str, registry: CollectorRegistry | None) -> Gauge:
    """``shipskip_build_info{service, version} 1``: which process a scrape came from, to tell the series both HTTP
    services have (``shipskip_http_*``, ``shipskip_readiness``) apart whatever the scraper names its jobs, by joining
    on the target: ``... * on (job, instance) group_left () shipskip_build_info{service="read"}``."""
    gauge = Gauge(
        "shipskip_build_info",
        "1, labelled with the process's service (votes, read, projector) and shipskip's version",
        ["service", "version"],
        multiprocess_mode="livemax",
        registry=registry,
    )
    gauge.labels(service, _version()).set(1)
    return gauge


def _version() -> str:
    try:
        return importlib.metadata.version("shipskip")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"
