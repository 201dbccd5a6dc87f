"""The votes service's JetStream publisher (services/votes/publisher.py) against the suite's real NATS server:
a vote is acknowledged before ``publish`` returns, a retried message id is stored once, and what JetStream
does not acknowledge is a ``StreamUnavailable`` (503), at once without a stream, after the deadline when nobody
answers."""

import asyncio
import secrets
from collections.abc import AsyncIterator
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
from services.votes.publisher import StreamUnavailable, VotePublisher


@pytest.fixture
async def nc(servers: ServerAddresses) -> AsyncIterator[NATS]:
    client = await nats.connect(servers.nats_url)
    await ensure_votes_stream(client.jetstream(), 120)
    yield client
    await client.drain()


def _vote() -> VoteCast:
    return VoteCast(
        event_id=new_event_id(),
        comparison_id="llama-4-scout-vs-windsurf-swe-1",
        tool_id="windsurf-swe-1",
        verdict="ship",
        voter_id=secrets.token_hex(8),
        at=datetime.now(UTC),
    )


async def test_each_of_many_votes_in_flight_is_stored_once(nc: NATS) -> None:
    publisher = VotePublisher(nc, nc.jetstream(), timeout_s=5)
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


async def test_a_subject_no_stream_takes_is_refused_at_once(nc: NATS) -> None:
    publisher = VotePublisher(nc, nc.jetstream(), timeout_s=30)
    with pytest.raises(nats.errors.NoRespondersError):
        await asyncio.wait_for(publisher._publish("shipskip.test.nostream", b"{}", "x"), 10)


async def test_a_publish_nobody_acknowledges_fails_after_its_deadline(nc: NATS) -> None:
    subject = "shipskip.test.silent." + secrets.token_hex(4)
    silent = await nc.subscribe(subject)  # a responder that never answers: no "no responders" either
    await nc.flush()
    publisher = VotePublisher(nc, nc.jetstream(), timeout_s=0.2)
    results = await asyncio.gather(
        *(publisher._publish(subject, b"{}", secrets.token_hex(4)) for _ in range(5)), return_exceptions=True
    )
    await silent.unsubscribe()
    assert all(isinstance(result, TimeoutError) for result in results)
    assert not publisher._waiting
    assert publisher._timer is None  # nothing due: no timer left running


async def test_an_error_from_jetstream_is_a_refusal(nc: NATS) -> None:
    subject = "shipskip.test.refusing." + secrets.token_hex(4)

    async def refuse(msg: Msg) -> None:
        await msg.respond(b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}')

    await nc.subscribe(subject, cb=refuse)
    await nc.flush()
    publisher = VotePublisher(nc, nc.jetstream(), timeout_s=5)
    ack = await publisher._publish(subject, b"{}", "x")
    assert ack.error == {"code": 503, "err_code": 10077, "description": "maximum messages exceeded"}


async def test_a_closed_connection_refuses_at_once(servers: ServerAddresses) -> None:
    client = await nats.connect(servers.nats_url)
    publisher = VotePublisher(client, client.jetstream(), timeout_s=30)
    await client.close()
    with pytest.raises(StreamUnavailable, match="not reachable"):
        await publisher.publish(_vote(), "x")
