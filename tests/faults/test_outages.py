"""A server stopped during sustained voting, then brought back: NATS, Postgres, Redis. Each test ends with the
exact check (tests/faults/ingest.py): every 202 in the stream once, the tallies equal to the clients' ballots.

These stop the session's own servers: each restarts its server in a ``finally`` and waits until it serves again.
"""

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import nats
import nats.errors
import pytest

from contracts.subjects import VOTES_STREAM
from infra.stack.servers import EmbeddedServers, ServerAddresses
from tests.faults.ingest import LOAD_ENV, TOOLS, Ingest, assert_exact
from tests.support import flush_redis, new_voter, random_key, running_pipeline, send_vote, wait_until

LLAMA = "llama-4-scout-vs-windsurf-swe-1"
TOOL = TOOLS[LLAMA][1]


def log_text(path: Path) -> str:
    return path.read_text(errors="replace")


async def jetstream_serves(servers: ServerAddresses) -> bool:
    try:
        nc = await nats.connect(servers.nats_url, connect_timeout=2, max_reconnect_attempts=0)
    except (OSError, TimeoutError, nats.errors.Error):
        return False
    try:
        await nc.jetstream().stream_info(VOTES_STREAM)
        return True
    except (OSError, TimeoutError, nats.errors.Error):
        return False
    finally:
        await nc.close()


def retry_until_taken(client: httpx.Client, votes_url: str, token: str, key: str) -> str:
    deadline = time.monotonic() + 60
    while True:
        answer = send_vote(client, votes_url, token, "ship", LLAMA, TOOL, {"Idempotency-Key": key})
        if answer.status_code == 202:
            event_id: str = answer.json()["event_id"]
            return event_id
        assert answer.status_code in (503, 504), answer.text  # not stored, or not known: the same key again
        assert time.monotonic() < deadline, "the votes service did not take votes again"
        time.sleep(0.2)


def test_nats_stopped_votes_are_refused_at_once_then_taken_again_and_a_retried_key_counts_once(
    servers: ServerAddresses, stack: EmbeddedServers, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running_pipeline(servers, tmp_path_factory.mktemp("nats-outage"), **LOAD_ENV) as pipeline:
        votes = pipeline.processes["votes"]
        client = httpx.Client(timeout=15)
        token = new_voter(client, pipeline.votes_url)
        ingest = Ingest(lambda: pipeline.votes_url).start()
        key = random_key()
        try:
            ingest.wait_for_votes(200)
            refused_before = ingest.outcomes.statuses[503] + ingest.outcomes.statuses[504]
            try:
                stack.stop_server("nats")
                wait_until(lambda: client.get(pipeline.votes_url + "/readyz").status_code == 503, timeout=30)
                # Not connected, so never sent: surely not stored, and said at once.
                other = new_voter(client, pipeline.votes_url)
                refused = send_vote(client, pipeline.votes_url, other, "ship", LLAMA, TOOL)
                assert refused.status_code == 503, refused.text
                assert int(refused.headers["retry-after"]) >= 1
                assert refused.json()["error"] == "stream_unavailable"
                # Under an Idempotency-Key the same, unless Redis did not answer in time (the load of the suite):
                # then an earlier try under the key may have stored it, and the answer is 504 (ballot_box.py).
                response = send_vote(client, pipeline.votes_url, token, "ship", LLAMA, TOOL, {"Idempotency-Key": key})
                assert response.status_code in (503, 504), response.text
                assert int(response.headers["retry-after"]) >= 1
                # The sustained clients are refused too, each with a Retry-After, and keep retrying under their key:
                # 503 the first time, 504 after (an earlier try under the key is not known not to be stored).
                wait_until(
                    lambda: ingest.outcomes.statuses[503] + ingest.outcomes.statuses[504] >= refused_before + 20,
                    timeout=30,
                )
                # Reads go on from memory.
                figures = client.get(f"{pipeline.read_url}/v1/comparisons/{LLAMA}/community")
                assert figures.status_code == 200, figures.text
            finally:
                stack.start_server("nats")
                wait_until(lambda: asyncio.run(jetstream_serves(servers)), timeout=60)

            # The client that was refused retries with the same key until the vote is taken: stored once.
            event_id = retry_until_taken(client, pipeline.votes_url, token, key)
            again = send_vote(client, pipeline.votes_url, token, "ship", LLAMA, TOOL, {"Idempotency-Key": key})
            assert again.status_code == 202, again.text
            assert again.json()["event_id"] == event_id
            ingest.record(LLAMA, TOOL, token, "ship", again.json()["event_id"])
            ingest.wait_for_votes(200)  # the service took votes again by itself
        finally:
            ingest.stop()
            client.close()
        assert votes.alive(), "the votes service died instead of waiting for NATS"
        assert ingest.outcomes.retry_after_missing == 0
        assert_exact(pipeline, servers, ingest)


WAITING = "postgres unavailable"
"""What the projector logs each time it puts a batch off."""


def waited_more(log_path: Path, before: int) -> Callable[[], bool]:
    return lambda: log_text(log_path).count(WAITING) > before


def test_postgres_stopped_the_projector_waits_reads_answer_from_memory_and_the_lag_drains(
    servers: ServerAddresses, stack: EmbeddedServers, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running_pipeline(servers, tmp_path_factory.mktemp("postgres-outage"), **LOAD_ENV) as pipeline:
        projector, read = pipeline.processes["projector"], pipeline.processes["read"]
        ingest = Ingest(lambda: pipeline.votes_url).start()
        try:
            for _ in range(2):  # twice: each stop catches the projector at another point of a batch
                ingest.wait_for_votes(150)
                waits = log_text(projector.log_path).count(WAITING)
                try:
                    stack.stop_server("postgres")
                    ingest.wait_for_votes(200)  # votes are still taken: the stream is the durable path
                    wait_until(waited_more(projector.log_path, waits), timeout=30)
                    for _ in range(20):
                        figures = httpx.get(f"{pipeline.read_url}/v1/comparisons/{LLAMA}/community", timeout=10)
                        assert figures.status_code == 200, figures.text
                        assert httpx.get(f"{pipeline.read_url}/healthz", timeout=10).status_code == 200
                finally:
                    stack.start_server("postgres")
            ingest.wait_for_votes(150)
        finally:
            ingest.stop()
        assert projector.alive(), f"the projector died instead of waiting:\n{projector.log_tail()}"
        assert read.alive()
        assert "retrying the batch in" in log_text(projector.log_path)
        assert_exact(pipeline, servers, ingest)


def limits_mode(url: str) -> str:
    mode: str = httpx.get(url + "/healthz", timeout=10).json()["limits"]
    return mode


def test_redis_stopped_under_load_votes_go_on_and_limits_are_shared_again_after(
    servers: ServerAddresses, stack: EmbeddedServers, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {
        **LOAD_ENV,
        # Limits on (every vote goes through the Lua script, and per process while Redis is down), none binding.
        "SHIPSKIP_RATE_LIMITS": "on",
        "SHIPSKIP_LIMIT_VOTES_PER_VOTER": "100000/1s,100000",
        "SHIPSKIP_LIMIT_VOTES_PER_ADDRESS": "100000/1s,100000",
        "SHIPSKIP_LIMIT_TOKENS_PER_ADDRESS": "100000/1s,100000",
        "SHIPSKIP_LIMIT_VOTES_PER_COMPARISON": "100000/1s,100000",
    }
    # Rate-limit state is keyed by limit name, not rate: another test's slower limit on 127.0.0.1 would still bind.
    asyncio.run(flush_redis(servers))
    with running_pipeline(servers, tmp_path_factory.mktemp("redis-outage"), **env) as pipeline:
        votes = pipeline.processes["votes"]
        ingest = Ingest(lambda: pipeline.votes_url).start()
        try:
            ingest.wait_for_votes(150)
            try:
                stack.stop_server("redis")
                wait_until(lambda: limits_mode(pipeline.votes_url) == "per-process", timeout=30)
                ingest.wait_for_votes(200)
            finally:
                stack.start_server("redis")
            wait_until(lambda: limits_mode(pipeline.votes_url) == "shared", timeout=30)
            ingest.wait_for_votes(200)
        finally:
            ingest.stop()
        assert votes.alive()
        assert set(ingest.outcomes.statuses) <= {200, 202}, ingest.outcomes.statuses
        # While Redis is away a retried key may be answered with a new event_id (docs/operations.md): count, not match.
        assert_exact(pipeline, servers, ingest, same_event_ids=False)


def test_redis_unreachable_but_keeping_its_data_under_load_loses_no_vote(
    servers: ServerAddresses, stack: EmbeddedServers, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A network partition rather than a restart: Redis is paused (SIGSTOP), so it comes back with what it
    remembered before, while votes were taken without it. One voter of the test's own goes ship, skip (during),
    ship (after); the sustained clients do the same at random."""
    with running_pipeline(servers, tmp_path_factory.mktemp("redis-paused"), **LOAD_ENV) as pipeline:
        client = httpx.Client(timeout=15)
        token = new_voter(client, pipeline.votes_url)
        ingest = Ingest(lambda: pipeline.votes_url).start()
        pid = stack.pid("redis")
        assert pid is not None

        def probe(verdict: str) -> None:
            answer = send_vote(client, pipeline.votes_url, token, verdict, LLAMA, TOOL)
            assert answer.status_code in (200, 202), answer.text
            ingest.record(LLAMA, TOOL, token, verdict, answer.json()["event_id"])

        try:
            probe("ship")
            ingest.wait_for_votes(300)
            try:
                os.kill(pid, signal.SIGSTOP)
                wait_until(lambda: limits_mode(pipeline.votes_url) == "per-process", timeout=30)
                probe("skip")
                ingest.wait_for_votes(300)
            finally:
                os.kill(pid, signal.SIGCONT)
            wait_until(lambda: limits_mode(pipeline.votes_url) == "shared", timeout=30)
            probe("ship")
            ingest.wait_for_votes(300)
        finally:
            ingest.stop()
            client.close()
        assert_exact(pipeline, servers, ingest, same_event_ids=False)
