"""What the votes service says when NATS does not answer: 503 ``stream_unavailable`` only for a vote that surely
is not stored, 504 ``vote_outcome_unknown`` for one that may be (services/votes/publisher.py, ballot_box.py).

NATS is frozen (SIGSTOP of the real nats-server this session started), so that acks come late or never, then
resumed; or killed with a publish written to it and started again. These stop the session's own NATS: each resumes
or restarts it in a ``finally`` and waits until it serves again.
"""

import asyncio
import contextlib
import os
import secrets
import signal
import threading
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from contracts.events import VoteCast, VoteRetracted
from contracts.subjects import VOTES_STREAM
from infra.stack.servers import EmbeddedServers, ServerAddresses
from services.shared.event_ids import new_event_id
from services.shared.jetstream import connect, ensure_votes_stream
from services.votes.identity import Hasher, VoterTokens
from services.votes.publisher import OutcomeUnknown, StreamUnavailable, VotePublisher
from tests.faults.test_outages import jetstream_serves
from tests.support import (
    Pipeline,
    new_voter,
    projected_position,
    running_pipeline,
    send_vote,
    stream_events,
    wait_until,
)
from tests.support import stream_last_seq as last_seq

LLAMA = "llama-4-scout-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"


def voter_id(pipeline: Pipeline, token: str) -> str:
    """The voter id the votes service puts in the events of this token's votes (services/votes/identity.py)."""
    keys = [key.encode() for key in pipeline.env["SHIPSKIP_TOKEN_KEYS"].split(",")]
    raw = VoterTokens(keys, 86400).verify(token)
    return Hasher(pipeline.env["SHIPSKIP_HASH_KEY"].encode()).voter_id(raw)


def stored_voters(servers: ServerAddresses) -> Counter[str]:
    """How many vote events of each voter the stream holds."""
    events = asyncio.run(stream_events(servers))
    return Counter(e.voter_id for e in events if isinstance(e, VoteCast | VoteRetracted))


def test_with_nats_frozen_no_vote_answered_503_is_stored_and_an_unknown_one_retried_counts_once(
    servers: ServerAddresses, stack: EmbeddedServers, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {"SHIPSKIP_PUBLISH_TIMEOUT_S": "1", "SHIPSKIP_BALLOTS_PER_CLIENT_DAY": "1000000"}
    with running_pipeline(servers, tmp_path_factory.mktemp("nats-frozen"), **env) as pipeline:
        client = httpx.Client(timeout=30)
        tokens = [new_voter(client, pipeline.votes_url) for _ in range(16)]
        keys = {token: secrets.token_hex(8) if index % 2 else None for index, token in enumerate(tokens)}
        before = send_vote(client, pipeline.votes_url, new_voter(client, pipeline.votes_url), "ship", LLAMA, TOOL)
        assert before.status_code == 202, before.text
        answers: dict[str, httpx.Response] = {}

        def vote(token: str) -> None:
            key = keys[token]
            with httpx.Client(timeout=30) as own:
                headers = {"Idempotency-Key": key} if key else {}
                answers[token] = send_vote(own, pipeline.votes_url, token, "ship", LLAMA, TOOL, headers)

        pid = stack.pid("nats")
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            threads = [threading.Thread(target=vote, args=(token,)) for token in tokens]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(20)  # each is answered after the publish deadline (1 s), NATS still frozen
            assert len(answers) == len(tokens), "a vote was not answered while NATS was frozen"
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: asyncio.run(jetstream_serves(servers)), timeout=60)

        statuses = Counter(answer.status_code for answer in answers.values())
        assert statuses[504] > 0, statuses  # acks came late: the outcome was unknown, not "unavailable"
        for answer in answers.values():
            if answer.status_code == 504:
                assert answer.json()["error"] == "vote_outcome_unknown", answer.text
                assert int(answer.headers["retry-after"]) >= 1
        # Resumed, NATS stores what it was sent while frozen: no vote answered 503 may be among it.
        stored = stored_voters(servers)
        said_unavailable = [token for token, answer in answers.items() if answer.status_code == 503]
        assert not [token for token in said_unavailable if stored[voter_id(pipeline, token)]], statuses

        # Each vote answered "unknown" under an Idempotency-Key, sent again with it, is stored exactly once.
        for token, answer in answers.items():
            key = keys[token]
            if answer.status_code == 504 and key is not None:
                again = send_vote(client, pipeline.votes_url, token, "ship", LLAMA, TOOL, {"Idempotency-Key": key})
                assert again.status_code == 202, again.text
                answers[token] = again
        stored = stored_voters(servers)
        for token, answer in answers.items():
            if answer.status_code == 202:
                assert stored[voter_id(pipeline, token)] == 1, answer.text
            elif answer.status_code == 504:  # without a key: it may be stored, once
                assert stored[voter_id(pipeline, token)] <= 1

        # And counted once: every voter in the stream has one ship on the tool.
        last = asyncio.run(last_seq(servers))
        wait_until(lambda: asyncio.run(projected_position(servers)) == last, timeout=60)
        figures = client.get(f"{pipeline.read_url}/v1/comparisons/{LLAMA}/community").json()
        ships = {tool["tool_id"]: tool["ship"] for tool in figures["tools"]}
        assert ships[TOOL] == sum(1 for count in stored.values() if count), (ships, stored)
        client.close()


SCRATCH = "OUTCOMES_TEST"
SCRATCH_SUBJECT = "shipskip.test.outcomes"


@pytest.fixture
async def scratch(servers: ServerAddresses) -> AsyncIterator[NATS]:
    nc = await connect(servers.nats, "shipskip-test")
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(SCRATCH)
    await js.add_stream(StreamConfig(name=SCRATCH, subjects=[SCRATCH_SUBJECT], storage=StorageType.MEMORY))
    yield nc
    await js.delete_stream(SCRATCH)
    await nc.close()


async def stored_ids(nc: NATS) -> list[str]:
    js = nc.jetstream()
    info = await js.stream_info(SCRATCH)
    ids = []
    for seq in range(info.state.first_seq or 1, (info.state.last_seq or 0) + 1):
        message = await js.get_msg(SCRATCH, seq)
        ids.append((message.header or {})["Nats-Msg-Id"])
    return ids


async def test_a_frozen_nats_that_stops_draining_gets_refusals_that_are_not_stored(
    servers: ServerAddresses, stack: EmbeddedServers, scratch: NATS
) -> None:
    publisher = VotePublisher(timeout_s=2)
    await publisher.start(servers.nats, "shipskip-test")
    payload = b"x" * 256 * 1024  # the pending buffer (8 MiB) fills after a few dozen of these
    pid = stack.pid("nats")
    assert pid is not None
    tasks: dict[str, asyncio.Task[object]] = {}
    os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(400):
            msg_id = new_event_id()
            tasks[msg_id] = asyncio.create_task(publisher._publish(SCRATCH_SUBJECT, payload, msg_id))
            await asyncio.sleep(0.005)
            refused = [t for t in tasks.values() if t.done() and isinstance(t.exception(), StreamUnavailable)]
            if len(refused) >= 3:
                break
        outcomes = dict(zip(tasks, await asyncio.gather(*tasks.values(), return_exceptions=True), strict=True))
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        kinds = Counter(type(outcome).__name__ for outcome in outcomes.values())
        assert kinds["StreamUnavailable"] >= 3, kinds
        assert kinds["OutcomeUnknown"] >= 1, kinds
        await asyncio.sleep(2)  # NATS takes in what was written to it while frozen
        stored = set(await stored_ids(scratch))
        refused_ids = {msg_id for msg_id, outcome in outcomes.items() if isinstance(outcome, StreamUnavailable)}
        assert not refused_ids & stored  # a refusal is never stored
        unknown = {msg_id for msg_id, outcome in outcomes.items() if isinstance(outcome, OutcomeUnknown)}
        assert unknown & stored  # what was unknown was stored after all: it could not have been answered 503
    finally:
        await publisher.close()


async def test_a_publish_lost_with_its_connection_is_sent_again_on_reconnecting_and_stored_once(
    servers: ServerAddresses, stack: EmbeddedServers
) -> None:
    nc = await connect(servers.nats, "shipskip-test")
    await ensure_votes_stream(nc.jetstream(), 120)
    await nc.close()
    publisher = VotePublisher(timeout_s=30)
    await publisher.start(servers.nats, "shipskip-test")
    vote = VoteCast(new_event_id(), LLAMA, TOOL, "ship", "voter-" + new_event_id(), datetime.now(UTC))
    pid = stack.pid("nats")
    assert pid is not None
    try:
        os.kill(pid, signal.SIGSTOP)
        publishing = asyncio.create_task(publisher.publish(vote, vote.event_id))
        await asyncio.sleep(0.5)  # written to the frozen server: it will never read it
        os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(stack.stop_server, "nats")
    finally:
        await asyncio.to_thread(stack.start_server, "nats")
    try:
        # Answered within its deadline: the publisher sent it again once its connection came back.
        duplicate = await asyncio.wait_for(publishing, 25)
        assert duplicate is False
        nc = await connect(servers.nats, "shipskip-test")
        try:
            js = nc.jetstream()
            last = (await js.stream_info(VOTES_STREAM)).state.last_seq or 0
            message = await js.get_msg(VOTES_STREAM, last)
            assert (message.header or {})["Nats-Msg-Id"] == vote.event_id
            assert await publisher.publish(vote, vote.event_id)  # again: JetStream holds it already
            assert (await js.stream_info(VOTES_STREAM)).state.last_seq == last
        finally:
            await nc.close()
    finally:
        await publisher.close()


def test_a_vote_whose_outcome_was_unknown_and_that_was_lost_is_not_remembered_as_cast(
    servers: ServerAddresses, stack: EmbeddedServers, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The votes service remembers each voter's verdict in Redis, to answer a repeat 200 "unchanged" without
    publishing. A vote whose outcome was unknown may never be stored: the verdict must not stay remembered, or the
    voter's repeat would be answered "unchanged" and the vote lost. And a retry under the Idempotency-Key of a vote
    whose outcome was unknown is never answered 503 "not stored" (the first try may have stored it), not even while
    NATS is down."""
    env = {"SHIPSKIP_PUBLISH_TIMEOUT_S": "1", "SHIPSKIP_BALLOTS_PER_CLIENT_DAY": "1000000"}
    with running_pipeline(servers, tmp_path_factory.mktemp("nats-lost"), **env) as pipeline:
        client = httpx.Client(timeout=30)
        token, keyed = new_voter(client, pipeline.votes_url), new_voter(client, pipeline.votes_url)
        key = {"Idempotency-Key": secrets.token_hex(8)}
        pid = stack.pid("nats")
        assert pid is not None
        try:
            os.kill(pid, signal.SIGSTOP)
            unknown = send_vote(client, pipeline.votes_url, token, "ship", LLAMA, TOOL)
            unknown_keyed = send_vote(client, pipeline.votes_url, keyed, "skip", LLAMA, TOOL, key)
            # Written to a server that never reads it: killed, it is lost with the connection.
            os.kill(pid, signal.SIGKILL)
            stack.stop_server("nats")
            wait_until(lambda: client.get(pipeline.votes_url + "/readyz").status_code == 503, timeout=30)
            retried = send_vote(client, pipeline.votes_url, keyed, "skip", LLAMA, TOOL, key)
        finally:
            stack.start_server("nats")
        wait_until(lambda: asyncio.run(jetstream_serves(servers)), timeout=60)
        assert unknown.status_code == 504, unknown.text
        assert unknown_keyed.status_code == 504, unknown_keyed.text
        assert retried.status_code == 504, retried.text  # not connected, but the first try may have stored it
        assert retried.json()["error"] == "vote_outcome_unknown"
        assert stored_voters(servers)[voter_id(pipeline, token)] == 0  # lost indeed
        wait_until(lambda: client.get(pipeline.votes_url + "/readyz").status_code == 200, timeout=30)
        again = send_vote(client, pipeline.votes_url, token, "ship", LLAMA, TOOL)
        assert again.status_code == 202, again.text  # published, not "unchanged"
        assert stored_voters(servers)[voter_id(pipeline, token)] == 1
        taken = send_vote(client, pipeline.votes_url, keyed, "skip", LLAMA, TOOL, key)
        assert taken.status_code == 202, taken.text
        assert stored_voters(servers)[voter_id(pipeline, keyed)] == 1
        client.close()
