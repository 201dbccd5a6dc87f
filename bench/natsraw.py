"""Baseline 3 and the replay set-up: raw nats-py publishing (acknowledged, many in flight) and reading back.

``synthetic_events`` makes vote events shaped like live traffic (the same ``VoteCast`` contract, a ring of voters
changing their minds, a few retractions, two comparisons); ``publish`` appends them with ``Nats-Msg-Id`` as the
votes service does, ``in_flight`` at a time; ``read_back`` reads a stream with an ephemeral consumer that takes
no acks, as fast as nats-py goes.
"""

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from contracts.catalog import Catalog
from contracts.events import Origin, Verdict, VoteCast, VoteRetracted, encode_event
from contracts.subjects import VOTES_SUBJECT_PREFIX
from services.shared.event_ids import new_event_id

SCRATCH_STREAM = "BENCH_RAW"
SCRATCH_PREFIX = "benchraw."


def synthetic_events(
    catalog: Catalog, count: int, voters: int = 100_000, subject_prefix: str = VOTES_SUBJECT_PREFIX
) -> Iterator[tuple[str, bytes, str]]:
    """(subject, payload, msg id) for ``count`` events: 3 in 4 on the first (hot) comparison."""
    comparisons = [(c.id, tuple(c.tools)) for c in catalog.comparisons]
    voter_ids = [hashlib.sha256(b"voter %d" % i).hexdigest()[:32] for i in range(voters)]
    clients = [hashlib.sha256(b"client %d" % i).hexdigest()[:32] for i in range(997)]
    origin_widget = "https://compare.example"
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for i in range(count):
        comparison_id, tools = (
            comparisons[0] if i % 4 or len(comparisons) == 1 else comparisons[i // 4 % len(comparisons)]
        )
        ring_pass = i // voters
        tool = tools[ring_pass % 2]
        voter = voter_ids[i % voters]
        origin = Origin(widget=origin_widget, client=clients[i % len(clients)])
        at = start + timedelta(milliseconds=i)
        event_id = new_event_id(int(at.timestamp() * 1000))
        event: VoteCast | VoteRetracted
        if i % 50 == 49:
            event = VoteRetracted(event_id, comparison_id, tool, voter, at, origin)
        else:
            verdict: Verdict = "ship" if (ring_pass // 2 + i) % 3 else "skip"
            event = VoteCast(event_id, comparison_id, tool, verdict, voter, at, origin)
        yield subject_prefix + comparison_id, encode_event(event), event_id


async def publish(nats_url: str, events: Iterator[tuple[str, bytes, str]], in_flight: int = 256) -> tuple[int, float]:
    """Publish all ``events``, ``in_flight`` unacknowledged at most; (messages acknowledged, seconds)."""
    nc = await nats.connect(nats_url, name="shipskip-bench-publish")
    try:
        js = nc.jetstream(timeout=30)
        done = 0

        async def worker() -> None:
            nonlocal done
            for subject, payload, msg_id in events:
                await js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return done, time.perf_counter() - started
    finally:
        await nc.close()


async def publish_async(
    nats_url: str, events: Iterator[tuple[str, bytes, str]], in_flight: int = 256
) -> tuple[int, float]:
    """The same with ``js.publish_async`` (a window of ``in_flight`` futures)."""
    nc = await nats.connect(nats_url, name="shipskip-bench-publish")
    try:
        js = nc.jetstream(timeout=30, publish_async_max_pending=in_flight)
        futures: list[asyncio.Future[PubAck]] = []
        started = time.perf_counter()
        for subject, payload, msg_id in events:
            futures.append(await js.publish_async(subject, payload, headers={"Nats-Msg-Id": msg_id}))
            if len(futures) >= 4 * in_flight:
                await asyncio.wait_for(asyncio.gather(*futures), 30)
                futures.clear()
        await asyncio.wait_for(asyncio.gather(*futures), 30)
        return 0, time.perf_counter() - started
    finally:
        await nc.close()


async def create_scratch_stream(nats_url: str) -> None:
    """A stream like VOTES (file storage) for publish runs that must not touch VOTES."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await delete_stream(js, SCRATCH_STREAM)
        await js.add_stream(
            StreamConfig(name=SCRATCH_STREAM, subjects=[SCRATCH_PREFIX + ">"], storage=StorageType.FILE)
        )
    finally:
        await nc.close()


async def delete_stream(js: nats.js.JetStreamContext, name: str) -> None:
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(name)


async def drop_scratch_stream(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await delete_stream(nc.jetstream(), SCRATCH_STREAM)
    finally:
        await nc.close()


async def read_back(
    nats_url: str, stream: str, subject: str, expected: int, batch: int = 2000, timeout_s: float = 300.0
) -> float:
    """Seconds to receive ``expected`` messages from the start of ``stream``, no acks (ephemeral pull consumer)."""
    nc = await nats.connect(nats_url, name="shipskip-bench-readback", pending_size=64 * 1024 * 1024)
    try:
        js = nc.jetstream()
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0, max_waiting=4
        )
        subscription = await js.pull_subscribe(subject, stream=stream, config=config)
        received = 0
        nbytes = 0
        started = time.perf_counter()
        while received < expected:
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"read {received} of {expected} messages in {timeout_s}s")
            try:
                messages = await subscription.fetch(batch=min(batch, expected - received), timeout=5.0)
            except nats.errors.TimeoutError:
                continue
            received += len(messages)
            nbytes += sum(len(m.data) for m in messages)
        elapsed = time.perf_counter() - started
        await subscription.unsubscribe()
        return elapsed
    finally:
        await nc.close()


async def read_back_ordered(
    nats_url: str,
    stream: str,
    subject: str,
    expected: int,
    timeout_s: float = 300.0,
    each: Callable[[Msg], None] | None = None,
) -> float:
    """The same with an ordered push consumer (no acks, flow control): nats-py's other fast way to read.

    ``each`` is called with every message (bench/rebuild_parts.py times what keeping them costs)."""
    nc = await nats.connect(nats_url, name="shipskip-bench-readback", pending_size=64 * 1024 * 1024)
    try:
        js = nc.jetstream()
        finished = asyncio.Event()
        received = 0

        async def on_message(msg: Msg) -> None:
            nonlocal received
            received += 1
            if each is not None:
                each(msg)
            if received >= expected:
                finished.set()

        started = time.perf_counter()
        subscription = await js.subscribe(
            subject,
            stream=stream,
            cb=on_message,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=512 * 1024 * 1024,
        )
        try:
            await asyncio.wait_for(finished.wait(), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"read {received} of {expected} messages in {timeout_s}s") from None
        elapsed = time.perf_counter() - started
        await subscription.unsubscribe()
        return elapsed
    finally:
        await nc.close()
