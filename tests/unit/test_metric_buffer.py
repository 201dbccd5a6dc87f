"""The metric buffer (services/shared/metric_buffer.py): counters reach prometheus-client at a flush, and a buffered
histogram, written by worker processes into a run's files, is collected exactly as a ``Histogram`` observed value by
value in the same processes would be (same family, samples, labels and values)."""

import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from services.shared.metric_buffer import MetricBuffer, histograms_of

BUCKETS = (0.001, 0.01, 0.1, 1.0)

# One worker process: PROMETHEUS_MULTIPROC_DIR is set before prometheus-client is imported, as the documentation
# asks, so its values go to the folder's files. argv: how ("direct" or "buffered"), then the values to observe per
# route, "|" between flushes.
_WORKER = """
import sys
from prometheus_client import Histogram
from services.shared.metric_buffer import BufferedHistogramFamily, MetricBuffer

how, observations = sys.argv[1], sys.argv[2:]
buckets = (0.001, 0.01, 0.1, 1.0)
doc = "Time until the response started, by route template"
if how == "direct":
    family = Histogram("h_seconds", doc, ["route"], buckets=buckets, registry=None)
    plain = Histogram("p_seconds", "unlabelled", buckets=buckets, registry=None)
    for item in observations:
        route, _, value = item.partition("=")
        if route == "plain":
            plain.observe(float(value))
        elif route != "|":
            family.labels(route).observe(float(value))
    family.labels("/never")  # a series made but never observed
else:
    buffer = MetricBuffer()
    family = BufferedHistogramFamily("h_seconds", doc, ["route"], buckets)
    plain = BufferedHistogramFamily("p_seconds", "unlabelled", [], buckets).labels()
    for item in observations:
        route, _, value = item.partition("=")
        if route == "plain":
            buffer.observe(plain, float(value))
        elif route == "|":
            buffer.flush()
        else:
            buffer.observe(family.labels(route), float(value))
    family.labels("/never")
    buffer.flush()
    buffer.flush()  # a second flush adds nothing
"""


def _run_worker(folder: Path, how: str, observations: list[str]) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(folder), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", _WORKER, how, *observations], env=env, check=True, cwd=Path.cwd())


def _families(metrics: list[Metric]) -> dict[str, tuple[str, str, set[tuple[str, tuple[tuple[str, str], ...], float]]]]:
    return {
        metric.name: (
            metric.type,
            metric.documentation,
            {(sample.name, tuple(sorted(sample.labels.items())), sample.value) for sample in metric.samples},
        )
        for metric in metrics
    }


def test_buffered_histograms_are_collected_as_histograms_observed_value_by_value(tmp_path: Path) -> None:
    # Values on every side of every bound, in two routes, an unlabelled histogram, two workers, several flushes.
    # Binary fractions (k/1024): their sums are exact in any order, so the sums compare exactly whatever the flushes.
    workers = [
        ["/a=0.0", "/a=0.0009765625", "/b=0.009765625", "|", "/a=0.5", "plain=0.03125", "/a=2.0", "/b=1.0"],
        ["/a=0.0625", "|", "/b=0.0078125", "/b=3.5", "|", "plain=1.0", "/a=0.0009765625", "/b=0.09765625"],
    ]
    direct, buffered = tmp_path / "direct", tmp_path / "buffered"
    for folder in (direct, buffered):
        folder.mkdir()
    for observations in workers:
        _run_worker(direct, "direct", observations)
        _run_worker(buffered, "buffered", observations)

    expected = _families(list(MultiProcessCollector(None, path=str(direct)).collect()))  # type: ignore[no-untyped-call]
    files = list(MultiProcessCollector(None, path=str(buffered)).collect())  # type: ignore[no-untyped-call]
    assert {metric.name for metric in files} == {
        "h_seconds_buffered_buckets",
        "h_seconds_buffered_sum",
        "p_seconds_buffered_buckets",
        "p_seconds_buffered_sum",
    }
    got = _families(list(histograms_of(files)))
    assert got == expected
    # What is compared: every bucket of every series (the unobserved one at 0), counts and sums of both workers.
    samples = expected["h_seconds"][2]
    assert ("h_seconds_count", (("route", "/a"),), 6.0) in samples
    assert ("h_seconds_bucket", (("le", "0.001"), ("route", "/a")), 3.0) in samples
    assert ("h_seconds_sum", (("route", "/b"),), 0.009765625 + 1.0 + 0.0078125 + 3.5 + 0.09765625) in samples
    assert ("h_seconds_bucket", (("le", "+Inf"), ("route", "/never")), 0.0) in samples
    assert ("p_seconds_count", (), 2.0) in expected["p_seconds"][2]


def test_buffered_histograms_before_a_flush_are_at_zero(tmp_path: Path) -> None:
    script = _WORKER.replace("    buffer.flush()\n    buffer.flush()  # a second flush adds nothing\n", "")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", script, "buffered", "/a=0.5"], env=env, check=True, cwd=Path.cwd())
    collected = _families(list(histograms_of(MultiProcessCollector(None, path=str(tmp_path)).collect())))  # type: ignore[no-untyped-call]
    assert ("h_seconds_count", (("route", "/a"),), 0.0) in collected["h_seconds"][2]


def test_buffered_counts_reach_the_counter_at_flush() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", ["k"], registry=registry)
    buffer = MetricBuffer()
    for _ in range(5):
        buffer.count(counter.labels("a"))
    buffer.count(counter.labels("b"), 2)
    assert registry.get_sample_value("c_total", {"k": "a"}) == 0
    buffer.flush()
    assert registry.get_sample_value("c_total", {"k": "a"}) == 5
    assert registry.get_sample_value("c_total", {"k": "b"}) == 2
    buffer.flush()  # flushing twice adds nothing
    assert registry.get_sample_value("c_total", {"k": "a"}) == 5
