"""The votes service's JetStream publisher (services/votes/publisher.py) against the suite's real NATS server:
a vote is acknowledged before ``publish`` returns, a retried message id is stored once, and what JetStream
does not acknowledge is a ``StreamUnavailable`` (503), at once without a stream, after the deadline when nobody
answers. Each of these for both ways it publishes: its own connection (services/votes/nats_link.py) and
nats-py's."""

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from contracts.events import VoteCast, decode_event, encode_event
from contracts.subjects import VOTES_STREAM, votes_subject
from infra.stack.servers import ServerAddresses
from services.shared.event_ids import new_event_id
from services.shared.jetstream import ensure_votes_stream
from services.votes.nats_link import LinkDown
from services.votes.publisher import StreamUnavailable, VotePublisher


@pytest.fixture
async def nc(servers: ServerAddresses) -> AsyncIterator[NATS]:
    client = await nats.connect(servers.nats_url)
    await ensure_votes_stream(client.jetstream(), 120)
    yield client
    await client.drain()


@pytest.fixture(params=["own connection", "nats-py"])
async def make_publisher(
    request: pytest.FixtureRequest, nc: NATS, servers: ServerAddresses
) -> AsyncIterator[Callable[[float], Awaitable[VotePublisher]]]:
    made: list[VotePublisher] = []

    async def make(timeout_s: float) -> VotePublisher:
        publisher = VotePublisher(nc, timeout_s=timeout_s)
        if request.param == "own connection":
            await publisher.start(servers.nats_url, "shipskip-test")
            assert publisher._link is not None
            assert publisher._link.connected
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        await publisher.close()


MakePublisher = Callable[[float], Awaitable[VotePublisher]]


def _vote() -> VoteCast:
    return VoteCast(
        event_id=new_event_id(),
        comparison_id="llama-4-scout-vs-windsurf-swe-1",
        tool_id="windsurf-swe-1",
        verdict="ship",
        voter_id=secrets.token_hex(8),
        at=datetime.now(UTC),
    )


async def test_each_of_many_votes_in_flight_is_stored_once(nc: NATS, make_publisher: MakePublisher) -> None:
    publisher = await make_publisher(5)
    js = nc.jetstream()
    before = (await js.stream_info(VOTES_STREAM)).state.last_seq
    votes = [_vote() for _ in range(300)]
    duplicates = await asyncio.gather(*(publisher.publish(vote, vote.event_id) for vote in votes))
    assert not any(duplicates)
    # Retried under the same message ids: JetStream says it holds them already, and stores nothing.
    again = await asyncio.gather(*(publisher.publish(vote, vote.event_id) for vote in votes[:50]))
    assert all(again)
    assert (await js.stream_info(VOTES_STREAM)).state.last_seq == before + 300
    stored = {
        (await js.get_msg(VOTES_STREAM, seq)).header["Nats-Msg-Id"]  # type: ignore[index]
        for seq in range(before + 1, before + 301)
    }
    assert stored == {vote.event_id for vote in votes}
    assert not publisher._waiting  # nothing left behind


async def test_votes_without_a_message_id_are_each_stored_without_headers(
    nc: NATS, make_publisher: MakePublisher
) -> None:
    # No Idempotency-Key, no dedup entry: the same event published twice is stored twice (nothing publishes one
    # again but a retry under a key, which has its message id).
    publisher = await make_publisher(5)
    js = nc.jetstream()
    before = (await js.stream_info(VOTES_STREAM)).state.last_seq
    votes = [_vote() for _ in range(40)]
    duplicates = await asyncio.gather(*(publisher.publish(vote, None) for vote in [*votes, *votes[:10]]))
    assert not any(duplicates)
    assert (await js.stream_info(VOTES_STREAM)).state.last_seq == before + 50
    stored = [await js.get_msg(VOTES_STREAM, seq) for seq in range(before + 1, before + 51)]
    assert sorted(decode_event(message.data or b"").event_id for message in stored) == sorted(
        vote.event_id for vote in [*votes, *votes[:10]]
    )
    assert all(not message.header for message in stored)


async def test_a_subject_no_stream_takes_is_refused_at_once(make_publisher: MakePublisher) -> None:
    publisher = await make_publisher(30)
    with pytest.raises(nats.errors.NoRespondersError):
        await asyncio.wait_for(publisher._publish("shipskip.test.nostream", b"{}", "x"), 10)


async def test_a_publish_nobody_acknowledges_fails_after_its_deadline(nc: NATS, make_publisher: MakePublisher) -> None:
    subject = "shipskip.test.silent." + secrets.token_hex(4)
    silent = await nc.subscribe(subject)  # a responder that never answers: no "no responders" either
    await nc.flush()
    publisher = await make_publisher(0.2)
    results = await asyncio.gather(
        *(publisher._publish(subject, b"{}", secrets.token_hex(4)) for _ in range(5)), return_exceptions=True
    )
    await silent.unsubscribe()
    assert all(isinstance(result, TimeoutError) for result in results)
    assert not publisher._waiting
    assert publisher._timer is None  # nothing due: no timer left running


async def test_an_error_from_jetstream_is_a_refusal(nc: NATS, make_publisher: MakePublisher) -> None:
    subject = "shipskip.test.refusing." + secrets.token_hex(4)

    async def refuse(msg: Msg) -> None:
        await msg.respond(b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}')

    await nc.subscribe(subject, cb=refuse)
    await nc.flush()
    publisher = await make_publisher(5)
    ack = await publisher._publish(subject, b"{}", "x")
    assert ack.error == {"code": 503, "err_code": 10077, "description": "maximum messages exceeded"}


async def test_a_closed_connection_refuses_at_once(servers: ServerAddresses) -> None:
    client = await nats.connect(servers.nats_url)
    publisher = VotePublisher(client, timeout_s=30)
    await client.close()
    with pytest.raises(StreamUnavailable, match="not reachable"):
        await publisher.publish(_vote(), "x")


async def test_its_own_connection_lost_fails_what_is_in_flight_at_once_and_comes_back(
    nc: NATS, servers: ServerAddresses
) -> None:
    publisher = VotePublisher(nc, timeout_s=30)
    await publisher.start(servers.nats_url, "shipskip-test")
    try:
        link = publisher._link
        assert link is not None
        connection = link._connection
        assert connection is not None
        assert connection._transport is not None
        # Publishes to the vote stream, which would be acknowledged: each runs until it waits for its ack, its
        # frame queued for this turn's write, and the connection is lost before that write. (A silent subscriber
        # that never answers, as the deadline test uses, once drew "no responders" here under a loaded CI run.)
        waiting = [
            asyncio.ensure_future(
                publisher._publish(votes_subject(vote.comparison_id), encode_event(vote), "x" + str(i))
            )
            for i, vote in enumerate(_vote() for _ in range(3))
        ]
        await asyncio.sleep(0)
        assert connection._outgoing, "the publishes are queued, not yet written"
        connection._transport.abort()  # the connection is lost (as when the server's process dies)
        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)  # not their 30 s
        assert all(isinstance(result, LinkDown) for result in results), results
        with pytest.raises(StreamUnavailable, match="not reachable"):
            await publisher.publish(_vote(), "x")
        for _ in range(100):  # it connects again within a second or so
            if publisher.connected:
                break
            await asyncio.sleep(0.05)
        assert publisher.connected
        assert not await publisher.publish(_vote(), new_event_id())
    finally:
        await publisher.close()


async def test_a_url_its_own_connection_does_not_speak_goes_through_nats_py(nc: NATS) -> None:
    publisher = VotePublisher(nc, timeout_s=5)
    await publisher.start("tls://127.0.0.1:1", "shipskip-test")
    assert publisher._link is None
    assert not await publisher.publish(_vote(), new_event_id())
