"""Redis stopped and restarted under two votes processes: votes keep coming in, limited per process, and the
limits are shared again once Redis is back."""

import asyncio
import itertools
from collections.abc import Iterator

import httpx
import pytest

from contracts.events import VoteCast, VoteEvent, VoteRetracted
from infra.stack.processes import ServiceProcess
from infra.stack.servers import EmbeddedServers, ServerAddresses, free_port
from tests.support import (
    flush_redis,
    random_key,
    read_events,
    reset_servers,
    send_vote,
    start_votes_service,
    stream_last_seq,
    wait_until,
)

LLAMA = "llama-4-scout-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"
ENV = {
    "SHIPSKIP_RATE_LIMITS": "on",
    "SHIPSKIP_TRUSTED_PROXIES": "127.0.0.1",
    "SHIPSKIP_LIMIT_VOTES_PER_VOTER": "3/1h,3",
    "SHIPSKIP_LIMIT_TOKENS_PER_ADDRESS": "1000/1h,1000",
}
DOWN = "Redis unreachable"
BACK = "Redis reachable again"

_addresses = (f"192.0.2.{n}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def copies(
    servers: ServerAddresses, embedded: EmbeddedServers | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    if embedded is None:
        pytest.skip("stopping Redis needs the embedded servers")
    asyncio.run(reset_servers(servers))
    asyncio.run(flush_redis(servers))
    first = start_votes_service(servers, tmp_path_factory.mktemp("first"), **ENV)
    try:
        second = start_votes_service(servers, tmp_path_factory.mktemp("second"), **ENV)
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def limits_mode(client: httpx.Client, process: ServiceProcess) -> str:
    mode: str = client.get(process.url + "/healthz").json()["limits"]
    return mode


def log_count(process: ServiceProcess, text: str) -> int:
    return process.log_path.read_text(errors="replace").count(text)


def vote_events(servers: ServerAddresses, first_seq: int) -> list[VoteEvent]:
    return [e for e in asyncio.run(read_events(servers, first_seq)) if isinstance(e, VoteCast | VoteRetracted)]


def alternate(
    client: httpx.Client, processes: list[ServiceProcess], token: str, address: str, count: int
) -> list[httpx.Response]:
    """``count`` votes of one voter, changing verdict each time, spread over ``processes`` in turn."""
    return [
        send_vote(client, process.url, token, ("ship", "skip")[i % 2], LLAMA, TOOL, {"X-Forwarded-For": address})
        for i, process in zip(range(count), itertools.cycle(processes))
    ]


def test_votes_go_on_without_redis_and_limits_are_shared_again_after(
    copies: tuple[ServiceProcess, ServiceProcess], embedded: EmbeddedServers, servers: ServerAddresses
) -> None:
    first, second = copies
    address = next(_addresses)
    with httpx.Client(timeout=10.0) as client:
        assert [limits_mode(client, p) for p in copies] == ["shared", "shared"]
        embedded.stop_server("redis")
        try:
            start = asyncio.run(stream_last_seq(servers)) + 1
            # A token can still be had, and votes are still taken: limited by each copy on its own.
            issued = client.post(first.url + "/v1/voters", headers={"X-Forwarded-For": address})
            assert issued.status_code == 201, issued.text
            token = issued.json()["voter_token"]
            on_first = alternate(client, [first], token, address, 4)
            on_second = alternate(client, [second], token, address, 4)
            assert [r.status_code for r in on_first] == [202, 202, 202, 429]
            assert [r.status_code for r in on_second] == [202, 202, 202, 429]
            assert on_first[3].headers["RateLimit-Policy"] == '"voter";q=3;w=3600'
            assert int(on_first[3].headers["Retry-After"]) > 0
            # A retry is still stored once (JetStream's Nats-Msg-Id), though the record of the answer is gone.
            key = random_key()
            other = client.post(first.url + "/v1/voters", headers={"X-Forwarded-For": address}).json()["voter_token"]
            retried = [send_vote(client, p.url, other, "ship", LLAMA, TOOL, {"Idempotency-Key": key}) for p in copies]
            assert [r.status_code for r in retried] == [202, 202]
            events = vote_events(servers, start)
            assert len(events) == 7
            # Each copy hashed the address under a day key of its own.
            assert len({e.origin.client for e in events[:3]}) == 1
            assert len({e.origin.client for e in events[3:6]}) == 1
            assert events[0].origin.client != events[3].origin.client
            assert [limits_mode(client, p) for p in copies] == ["per-process", "per-process"]
        finally:
            embedded.start_server("redis")

        wait_until(lambda: [limits_mode(client, p) for p in copies] == ["shared", "shared"], timeout=15)
        for process in copies:
            # Logged once for the whole outage (not per request), and once when it ended.
            assert log_count(process, DOWN) == 1, process.log_tail()
            assert log_count(process, BACK) == 1, process.log_tail()

        # Shared again: a new voter gets three votes across both copies, not three in each.
        after = asyncio.run(stream_last_seq(servers)) + 1
        token = client.post(second.url + "/v1/voters", headers={"X-Forwarded-For": address}).json()["voter_token"]
        responses = alternate(client, [first, second], token, address, 6)
        assert [r.status_code for r in responses] == [202, 202, 202, 429, 429, 429]
        events = vote_events(servers, after)
        assert len(events) == 3
        # And one day key again, for both copies.
        assert len({e.origin.client for e in events}) == 1


def test_a_copy_starts_and_takes_votes_while_redis_is_unreachable(
    servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory
) -> None:
    asyncio.run(reset_servers(servers))
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    process = start_votes_service(servers, tmp_path_factory.mktemp("no-redis"), **ENV, SHIPSKIP_REDIS_URL=nowhere)
    try:
        with httpx.Client(timeout=10.0) as client:
            assert limits_mode(client, process) == "per-process"
            token = client.post(process.url + "/v1/voters").json()["voter_token"]
            responses = alternate(client, [process], token, next(_addresses), 4)
            assert [r.status_code for r in responses] == [202, 202, 202, 429]
        assert log_count(process, DOWN) == 1, process.log_tail()
    finally:
        process.stop()
