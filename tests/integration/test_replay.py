"""StreamReplay on a real stream: every event up to the sequence asked for, in order, also right at the stream's end.

At the end of the stream the last message delivered said nothing was pending; events appended since may still be
on their way when the rebuild's swap asks for everything up to the live projector's position. Stopping there
would leave out of the rebuilt rows events the projector had counted.
"""

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from contracts.subjects import VOTES_STREAM, votes_subject
from infra.stack.servers import ServerAddresses
from services.tally.rebuild.replay import StreamReplay
from services.tally.store import StreamRecord
from tests.support import publish_raw, reset_servers

SUBJECT = votes_subject("llama-4-scout-vs-windsurf-swe-1")


@pytest.fixture
async def reader(servers: ServerAddresses) -> AsyncIterator[NATS]:
    await reset_servers(servers)
    nc = await nats.connect(servers.nats_url)
    yield nc
    await nc.close()


def make_replay(reader: NATS, batch_size: int) -> StreamReplay:
    return StreamReplay(reader, batch_size=batch_size)


async def test_a_replay_at_the_end_of_the_stream_still_folds_what_was_appended_since(
    servers: ServerAddresses, reader: NATS
) -> None:
    await publish_raw(servers, [(SUBJECT, b"%d" % i) for i in range(3000)])
    folded: list[int] = []

    async def take(records: list[StreamRecord]) -> None:
        folded.extend(record.seq for record in records)

    replay = make_replay(reader, 500)
    await replay.open()
    try:
        assert replay.total == 3000
        await replay.fold_until(3000, take)
        assert folded == list(range(1, 3001))
        for _ in range(10):
            # Stored (acknowledged) while this event loop is blocked, so the deliveries to the replay wait unread
            # in its socket: as when a live projector folded events that are still on their way to the replay.
            target = append_from_another_thread(servers, 3)
            await replay.fold_until(target, take)
            assert replay.folded_to == target
        assert folded == list(range(1, 3000 + 30 + 1))
        assert replay.folded == 3030
    finally:
        await replay.close()


def append_from_another_thread(servers: ServerAddresses, count: int) -> int:
    """Append ``count`` events from a connection on a thread of its own, blocking the caller; the last sequence."""

    async def append() -> int:
        publisher = await nats.connect(servers.nats_url)
        try:
            acks = [await publisher.jetstream().publish(SUBJECT, b"more") for _ in range(count)]
            return max(ack.seq for ack in acks)
        finally:
            await publisher.close()

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, append()).result()


async def test_a_replay_stops_at_the_target_and_hands_on_the_rest_later(servers: ServerAddresses, reader: NATS) -> None:
    await publish_raw(servers, [(SUBJECT, b"%d" % i) for i in range(1000)])
    batches: list[list[int]] = []

    async def take(records: list[StreamRecord]) -> None:
        batches.append([record.seq for record in records])

    replay = make_replay(reader, 300)
    await replay.open()
    try:
        # The fold takes what has arrived, so on a loaded machine the first batch could be shorter than 300 (seen
        # in a fresh-clone run); with the whole stream buffered first, where the batches end is the replay's doing.
        async with asyncio.timeout(10):
            while replay.reached < 1000:
                await asyncio.sleep(0.01)
        await replay.fold_until(450, take)
        assert [b[-1] for b in batches] == [300, 450]
        assert replay.folded_to == 450
        await replay.fold_until(10_000, take)  # past the end: everything there is, then it returns
        assert [seq for batch in batches for seq in batch] == list(range(1, 1001))
        assert max(len(batch) for batch in batches) <= 300
    finally:
        await replay.close()


async def test_it_reads_no_more_than_its_buffer_has_room_for(servers: ServerAddresses, reader: NATS) -> None:
    await publish_raw(servers, [(SUBJECT, b"%d" % i) for i in range(3000)])
    replay = make_replay(reader, 200)
    await replay.open()
    try:
        await asyncio.sleep(0.5)  # nothing folded: the server sends what was asked for, then waits
        assert replay.reached == 800  # 4 batches: the buffer's bound
        folded: list[int] = []

        async def take(records: list[StreamRecord]) -> None:
            folded.extend(record.seq for record in records)

        await replay.fold_until(3000, take)
        assert folded == list(range(1, 3001))
    finally:
        await replay.close()


async def test_a_consumer_deleted_under_it_is_made_again_from_where_it_was(
    servers: ServerAddresses, reader: NATS
) -> None:
    await publish_raw(servers, [(SUBJECT, b"%d" % i) for i in range(3000)])
    folded: list[int] = []

    async def take(records: list[StreamRecord]) -> None:
        folded.extend(record.seq for record in records)

    before = [info.name async for info in consumer_names(reader)]
    replay = make_replay(reader, 300)
    await replay.open()
    try:
        await replay.fold_until(900, take)
        first = replay._consumer
        assert first
        await reader.jetstream().delete_consumer(VOTES_STREAM, first)
        async with asyncio.timeout(20):
            await replay.fold_until(3000, take)
        assert folded == list(range(1, 3001))  # nothing left out, nothing twice
        assert replay._consumer not in ("", first)
        consumers = [info.name async for info in consumer_names(reader)]
        assert first not in consumers
    finally:
        await replay.close()
    assert not replay._consumer
    assert [info.name async for info in consumer_names(reader)] == before  # the replay leaves nothing behind


async def consumer_names(nc: NATS) -> AsyncIterator[Any]:
    for info in await nc.jetstream().consumers_info(VOTES_STREAM):
        yield info


async def test_a_replay_over_a_range_hands_exactly_its_events_and_asks_for_nothing_past_it(
    servers: ServerAddresses, reader: NATS
) -> None:
    """As a rebuild's readers take the stream (services/tally/rebuild/readers.py): from ``start`` to ``end``."""
    await publish_raw(servers, [(SUBJECT, b"%d" % i) for i in range(3000)])
    for start, end in ((1, 700), (701, 2999), (2990, 3000), (2500, 4000)):
        folded: list[int] = []

        async def take(records: list[StreamRecord], into: list[int] = folded) -> None:
            into.extend(record.seq for record in records)

        replay = StreamReplay(reader, batch_size=300, start=start, end=end, buffered_batches=3)
        await replay.open()
        try:
            await replay.fold_until(end, take)
            assert folded == list(range(start, min(end, 3000) + 1))
            assert replay.reached == min(end, 3000)  # nothing past the end was fetched
        finally:
            await replay.close()
