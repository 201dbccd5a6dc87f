"""PullBatches on a real stream and consumer: what the live projector's fetch (and a replay's) must do.

Up to a batch at once from what the stream holds; a fetch while the stream is quiet returns with the first vote
appended, not when its wait ends; nothing delivered is dropped between fetches, and every delivery comes in the
consumer's order (the projector's gap check relies on it); a consumer that is gone is reported, not waited on.
"""

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from contracts.subjects import VOTES_STREAM, votes_subject
from infra.stack.servers import ServerAddresses
from services.shared.deliveries import delivery_sequences
from services.tally.pull import PullBatches, PullRefused
from tests.support import publish_raw, reset_servers

SUBJECT = votes_subject("llama-4-scout-vs-windsurf-swe-1")
DURABLE = "pull-test"


@pytest.fixture
async def puller(servers: ServerAddresses) -> AsyncIterator[PullBatches]:
    await reset_servers(servers)
    nc = await nats.connect(servers.nats_url)
    await nc.jetstream().add_consumer(
        VOTES_STREAM, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.ALL, filter_subject=SUBJECT)
    )
    batches = PullBatches(nc, VOTES_STREAM, DURABLE)
    await batches.open()
    yield batches
    await batches.close()
    await nc.close()


@pytest.fixture
async def reader(servers: ServerAddresses) -> AsyncIterator[NATS]:
    nc = await nats.connect(servers.nats_url)
    yield nc
    await nc.close()


def consumer_sequences(messages: list[Msg]) -> list[int]:
    for message in messages:  # the cut (services/shared/deliveries.py) says what nats-py's metadata says
        metadata = message.metadata
        expected = (metadata.sequence.stream, metadata.sequence.consumer, metadata.num_pending)
        assert delivery_sequences(message.reply) == expected
    return [delivery_sequences(message.reply)[1] for message in messages]


async def test_fetches_take_what_the_stream_holds_a_batch_at_a_time(
    servers: ServerAddresses, puller: PullBatches
) -> None:
    await publish_raw(servers, [(SUBJECT, b"%d" % i) for i in range(250)])
    sizes = []
    delivered: list[int] = []
    for _ in range(3):
        messages = await puller.fetch(100, wait_s=5.0)
        sizes.append(len(messages))
        delivered.extend(consumer_sequences(messages))
    assert sizes == [100, 100, 50]
    assert delivered == list(range(1, 251))
    assert [m.data for m in messages] == [b"%d" % i for i in range(200, 250)]


async def test_a_fetch_on_a_quiet_stream_returns_with_the_first_vote(
    servers: ServerAddresses, puller: PullBatches
) -> None:
    nc = await nats.connect(servers.nats_url)
    try:

        async def append_later() -> float:
            await asyncio.sleep(0.2)
            await nc.jetstream().publish(SUBJECT, b"late")
            return time.monotonic()

        appending = asyncio.create_task(append_later())
        messages = await puller.fetch(100, wait_s=3.0)
        returned = time.monotonic()
        appended = await appending
        assert [m.data for m in messages] == [b"late"]
        # Well before the 3 s wait was out; the margin is for a loaded machine, the wait is what is measured.
        assert returned - appended < 1.5
        # What the lingering request delivers after its fetch returned waits for the next fetch.
        await publish_raw(servers, [(SUBJECT, b"%d" % i) for i in range(30)])
        more = await puller.fetch(100, wait_s=3.0)
        while len(more) < 30:
            more += await puller.fetch(100, wait_s=3.0)
        assert consumer_sequences(messages + more) == list(range(1, 32))
    finally:
        await nc.close()


async def test_a_fetch_with_nothing_to_deliver_times_out(puller: PullBatches) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await puller.fetch(100, wait_s=0.3)
    # It waited (the no-wait request's 404 did not end it) until its lingering request expired, 10 ms early.
    assert time.monotonic() - started >= 0.28


async def test_a_deleted_consumer_is_reported(servers: ServerAddresses, puller: PullBatches, reader: NATS) -> None:
    await reader.jetstream().delete_consumer(VOTES_STREAM, DURABLE)
    with pytest.raises(PullRefused):
        await puller.fetch(100, wait_s=2.0)
