"""The projector's metrics, per partition (the consumer's name: ``tally``, or ``tally-<i>-of-<N>``).

Batches are counted as they are folded (``folded``). The lag is read when scraped, from the server, so it is
right even while the projector is stuck (Postgres down): in events, what the partition's consumer has not had
acknowledged (pending plus delivered-but-unacked); in seconds, how long ago the oldest of those was appended
(0 when there is none), the definition ``make bench`` measures. The projector is one process: its metrics live in
its own registry, in memory.
"""

import logging
import time

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

from contracts.subjects import VOTES_STREAM, VOTES_SUBJECTS
from services.shared.metrics import build_info
from services.shared.readiness import readiness_gauge

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000)
FOLD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ProjectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # CPU, memory, open files of this process
        labels = ["partition"]
        self.lag_events = Gauge(
            "shipskip_projector_lag_events",
            "Events appended to the stream that this partition has not folded yet",
            labels,
            registry=self.registry,
        )
        self.lag_seconds = Gauge(
            "shipskip_projector_lag_seconds",
            "How long ago the oldest event not folded yet was appended (0: none waiting)",
            labels,
            registry=self.registry,
        )
        self.position = Gauge(
            "shipskip_projector_position", "The stream sequence folded up to", labels, registry=self.registry
        )
        self.batch_size = Histogram(
            "shipskip_projector_batch_size",
            "Messages per batch folded in one transaction",
            labels,
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.fold_seconds = Histogram(
            "shipskip_projector_fold_seconds",
            "Time to fold one batch: its transaction, retries while Postgres was away included",
            labels,
            buckets=FOLD_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "shipskip_projector_events", "Messages folded (dead letters included)", labels, registry=self.registry
        )
        self.dead_letters = Counter(
            "shipskip_projector_dead_letters",
            "Messages the fold could not take (kept in dead_letters for `shipskip dead-letters`)",
            labels,
            registry=self.registry,
        )

        self.readiness = readiness_gauge(self.registry)
        build_info("projector", self.registry)

    def folded(self, partition: str, messages: int, dead_letters: int, seconds: float) -> None:
        self.batch_size.labels(partition).observe(messages)
        self.fold_seconds.labels(partition).observe(seconds)
        self.events.labels(partition).inc(messages)
        if dead_letters:
            self.dead_letters.labels(partition).inc(dead_letters)

    async def read_lag(self, js: JetStreamContext, partitions: list[str]) -> None:
        """Ask the server how far behind each partition's consumer is; keep the last values if it cannot say."""
        for partition in partitions:
            try:
                events, oldest = await consumer_lag(js, partition)
            except (nats.errors.Error, OSError) as exc:
                log.debug("lag of %s not read: %r", partition, exc)
                continue
            self.lag_events.labels(partition).set(events)
            self.lag_seconds.labels(partition).set(max(0.0, time.time() - oldest) if oldest is not None else 0.0)


async def consumer_lag(js: JetStreamContext, consumer: str) -> tuple[int, float | None]:
    """The events the consumer has not had acknowledged, and when the oldest of them was appended (epoch seconds)."""
    info = await js.consumer_info(VOTES_STREAM, consumer)
    waiting = (info.num_pending or 0) + (info.num_ack_pending or 0)
    if waiting == 0:
        return 0, None
    floor = info.ack_floor.stream_seq if info.ack_floor is not None and info.ack_floor.stream_seq else 0
    subject = info.config.filter_subject or VOTES_SUBJECTS
    try:
        oldest = await js.get_msg(VOTES_STREAM, seq=floor + 1, subject=subject, next=True)
    except NotFoundError:  # folded meanwhile
        return waiting, None
    return waiting, oldest.time.timestamp() if oldest.time is not None else None
