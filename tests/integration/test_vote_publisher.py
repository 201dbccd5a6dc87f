"""The votes service's JetStream publisher (services/votes/publisher.py) against the suite's real NATS server: a vote
is acknowledged before ``publish`` returns, a retried message id is stored once, and each way a publish can end is
told apart: ``StreamUnavailable`` (surely not stored: never sent, no responders, refused) or ``OutcomeUnknown`` (sent,
no answer in time). Outages of the server itself are in tests/faults/test_vote_outcomes.py."""

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from contracts.events import VoteCast
from contracts.subjects import VOTES_STREAM
from infra.stack.servers import ServerAddresses
from services.shared.event_ids import new_event_id
from services.shared.jetstream import ensure_votes_stream
from services.votes.publisher import OutcomeUnknown, StreamUnavailable, VotePublisher


@pytest.fixture
async def nc(servers: ServerAddresses) -> AsyncIterator[NATS]:
    client = await nats.connect(servers.nats_url)
    await ensure_votes_stream(client.jetstream(), 120)
    yield client
    await client.drain()


MakePublisher = Callable[[float], Awaitable[VotePublisher]]


@pytest.fixture
async def make_publisher(servers: ServerAddresses) -> AsyncIterator[MakePublisher]:
    made: list[VotePublisher] = []

    async def make(timeout_s: float) -> VotePublisher:
        publisher = VotePublisher(timeout_s=timeout_s)
        await publisher.start(servers.nats, "shipskip-test")
        assert publisher.connected
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        await publisher.close()


def _vote() -> VoteCast:
    return VoteCast(
        event_id=new_event_id(),
        comparison_id="llama-4-scout-vs-windsurf-swe-1",
        tool_id="windsurf-swe-1",
        verdict="ship",
        voter_id=secrets.token_hex(8),
        at=datetime.now(UTC),
    )


async def test_each_of_many_votes_in_flight_is_stored_once_under_its_message_id(
    nc: NATS, make_publisher: MakePublisher
) -> None:
    publisher = await make_publisher(5)
    js = nc.jetstream()
    before = (await js.stream_info(VOTES_STREAM)).state.last_seq
    votes = [_vote() for _ in range(300)]
    duplicates = await asyncio.gather(*(publisher.publish(vote, vote.event_id) for vote in votes))
    assert not any(duplicates)
    # Published again under the same message ids: JetStream says it holds them already, and stores nothing.
    again = await asyncio.gather(*(publisher.publish(vote, vote.event_id) for vote in votes[:50]))
    assert all(again)
    assert (await js.stream_info(VOTES_STREAM)).state.last_seq == before + 300
    stored = {
        (await js.get_msg(VOTES_STREAM, seq)).header["Nats-Msg-Id"]  # type: ignore[index]
        for seq in range(before + 1, before + 301)
    }
    assert stored == {vote.event_id for vote in votes}
    assert not publisher._waiting  # nothing left behind
    assert not publisher._in_flight


async def test_a_subject_no_stream_takes_is_surely_not_stored(make_publisher: MakePublisher) -> None:
    publisher = await make_publisher(30)
    with pytest.raises(StreamUnavailable, match="no responders"):
        await asyncio.wait_for(publisher._publish("shipskip.test.nostream", b"{}", "x"), 10)  # at once, not in 30 s


async def test_a_publish_nobody_answers_is_unknown_after_its_deadline(nc: NATS, make_publisher: MakePublisher) -> None:
    subject = "shipskip.test.silent." + secrets.token_hex(4)
    silent = await nc.subscribe(subject)  # a responder that never answers: no "no responders" either
    await nc.flush()
    publisher = await make_publisher(0.2)
    results = await asyncio.gather(
        *(publisher._publish(subject, b"{}", secrets.token_hex(4)) for _ in range(5)), return_exceptions=True
    )
    await silent.unsubscribe()
    assert all(isinstance(result, OutcomeUnknown) for result in results), results
    assert not publisher._waiting
    assert publisher._timer is None  # nothing due: no timer left running


async def test_an_error_from_jetstream_is_surely_not_stored(nc: NATS, make_publisher: MakePublisher) -> None:
    subject = "shipskip.test.refusing." + secrets.token_hex(4)

    async def refuse(msg: Msg) -> None:
        await msg.respond(b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}')

    await nc.subscribe(subject, cb=refuse)
    await nc.flush()
    publisher = await make_publisher(5)
    with pytest.raises(StreamUnavailable, match="maximum messages exceeded"):
        await publisher._publish(subject, b"{}", "x")


async def test_not_connected_is_surely_not_stored_and_said_at_once(servers: ServerAddresses) -> None:
    publisher = VotePublisher(timeout_s=30)
    with pytest.raises(StreamUnavailable, match="not reachable"):
        await publisher.publish(_vote(), "x")  # never started
    await publisher.start(servers.nats, "shipskip-test")
    await publisher.close()
    with pytest.raises(StreamUnavailable, match="not reachable"):
        await asyncio.wait_for(publisher.publish(_vote(), "y"), 5)
