"""Rate limits against real Redis, through real votes-service processes: exact counts, headers, shared state.

Every limit here is "N per hour", so nothing refills while a test runs and the counts are exact. Distinct client
addresses come from X-Forwarded-For, which the processes believe from 127.0.0.1 (a trusted proxy) only.
"""

import asyncio
import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from contracts.events import VoteCast
from infra.stack.processes import ServiceProcess
from infra.stack.servers import ServerAddresses
from tests.support import (
    flush_redis,
    new_voter,
    reset_servers,
    send_vote,
    start_votes_service,
    stream_seq,
    vote_events,
)

LLAMA = "llama-4-scout-vs-windsurf-swe-1"
SMOL = "smolvlm2-2b-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"

TIGHT = {
    "SHIPSKIP_RATE_LIMITS": "on",
    "SHIPSKIP_TRUSTED_PROXIES": "127.0.0.1",
    "SHIPSKIP_LIMIT_VOTES_PER_VOTER": "3/1h,3",
    "SHIPSKIP_LIMIT_VOTES_PER_ADDRESS": "4/1h,4",
    "SHIPSKIP_LIMIT_TOKENS_PER_ADDRESS": "3/1h,3",
    "SHIPSKIP_LIMIT_VOTES_PER_COMPARISON": "1000/1s,1000",
}

_addresses = (f"198.51.100.{n}" for n in itertools.count(1))


def fresh_address() -> str:
    return next(_addresses)


@pytest.fixture(scope="module")
def clean(servers: ServerAddresses) -> None:
    asyncio.run(reset_servers(servers))
    asyncio.run(flush_redis(servers))


@contextmanager
def votes_process(
    servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory, name: str, **env: str
) -> Iterator[ServiceProcess]:
    process = start_votes_service(servers, tmp_path_factory.mktemp(name), **env)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def tight(clean: None, servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with votes_process(servers, tmp_path_factory, "tight", **TIGHT) as process:
        yield process


@pytest.fixture(scope="module")
def tight_copy(
    clean: None, servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    with votes_process(servers, tmp_path_factory, "tight-copy", **TIGHT) as process:
        yield process


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as http:
        yield http


def new_token(client: httpx.Client, url: str, address: str | None = None) -> str:
    return new_voter(client, url, address or fresh_address())


def rate_limit(response: httpx.Response) -> tuple[str, int, int]:
    """(policy, remaining, reset) from the RateLimit field, checked against RateLimit-Policy."""
    match = re.fullmatch(r'"([a-z-]+)";r=(\d+);t=(\d+)', response.headers["RateLimit"])
    assert match is not None, response.headers["RateLimit"]
    assert response.headers["RateLimit-Policy"].startswith(f'"{match[1]}";')
    return match[1], int(match[2]), int(match[3])


def assert_refused(response: httpx.Response, policy: str, quota: int, window: int) -> None:
    """A 429 naming ``policy``, with Retry-After, the IETF fields and the JSON body agreeing."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == "rate_limited"
    assert f'"{policy}"' in body["detail"]
    retry_after = int(response.headers["Retry-After"])
    assert body["retry_after"] == retry_after
    interval = window // quota
    # The next request passes one emission interval after the burst was used up (minus the test's own time).
    assert interval - 60 < retry_after <= interval
    assert response.headers["RateLimit-Policy"] == f'"{policy}";q={quota};w={window}'
    name, remaining, reset = rate_limit(response)
    assert (name, remaining) == (policy, 0)
    assert window - 60 < reset <= window


def test_a_voter_hammering_gets_exactly_the_allowed_votes(
    tight: ServiceProcess, client: httpx.Client, servers: ServerAddresses
) -> None:
    token = new_token(client, tight.url)
    before = stream_seq(servers)
    responses = [
        # Each from another address, so that only the per-voter limit binds; alternating, so each one counts.
        send_vote(client, tight.url, token, ("ship", "skip")[i % 2], LLAMA, TOOL, {"X-Forwarded-For": fresh_address()})
        for i in range(8)
    ]
    assert [r.status_code for r in responses] == [202, 202, 202] + [429] * 5
    assert [rate_limit(r)[:2] for r in responses[:3]] == [("voter", 2), ("voter", 1), ("voter", 0)]
    assert all(r.headers["RateLimit-Policy"] == '"voter";q=3;w=3600' for r in responses[:3])
    for refused in responses[3:]:
        assert_refused(refused, "voter", quota=3, window=3600)
    assert stream_seq(servers) == before + 3


def test_many_voters_behind_one_address_share_its_limit(
    tight: ServiceProcess, client: httpx.Client, servers: ServerAddresses
) -> None:
    tokens = [new_token(client, tight.url) for _ in range(3)]
    shared = fresh_address()
    before = stream_seq(servers)
    statuses = []
    for round_ in range(2):
        for token in tokens:
            response = send_vote(
                client, tight.url, token, ("ship", "skip")[round_], LLAMA, TOOL, {"X-Forwarded-For": shared}
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert_refused(response, "address", quota=4, window=3600)
    assert statuses == [202] * 4 + [429] * 2
    assert stream_seq(servers) == before + 4
    # The last voter, refused behind that address, still votes from another one.
    elsewhere = send_vote(client, tight.url, tokens[2], "skip", LLAMA, TOOL, {"X-Forwarded-For": fresh_address()})
    assert elsewhere.status_code == 202, elsewhere.text


def test_voter_tokens_are_limited_per_address(tight: ServiceProcess, client: httpx.Client) -> None:
    address = fresh_address()
    answers = [client.post(tight.url + "/v1/voters", headers={"X-Forwarded-For": address}) for _ in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    assert [rate_limit(a)[:2] for a in answers[:3]] == [("voter-tokens", 2), ("voter-tokens", 1), ("voter-tokens", 0)]
    assert_refused(answers[3], "voter-tokens", quota=3, window=3600)
    assert "set-cookie" not in answers[3].headers
    assert client.post(tight.url + "/v1/voters", headers={"X-Forwarded-For": fresh_address()}).status_code == 201


def test_a_client_cannot_escape_its_address_by_sending_its_own_forwarded_for(
    tight: ServiceProcess, client: httpx.Client, servers: ServerAddresses
) -> None:
    """Behind a trusted proxy only the entry the proxy appended counts; what the client wrote before it does not."""
    real = fresh_address()
    tokens = [new_token(client, tight.url) for _ in range(5)]
    first = stream_seq(servers) + 1
    statuses = [
        send_vote(
            client, tight.url, token, "ship", LLAMA, TOOL, {"X-Forwarded-For": f"203.0.113.{i}, {real}"}
        ).status_code
        for i, token in enumerate(tokens)
    ]
    assert statuses == [202] * 4 + [429]
    hashes = {event.origin.client for event in vote_events(servers, first)}
    assert len(hashes) == 1
    assert None not in hashes


def test_an_untrusted_peer_cannot_choose_its_address(
    clean: None, servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory, client: httpx.Client
) -> None:
    """Without trusted proxies every X-Forwarded-For is ignored: all of these come from 127.0.0.1."""
    env = {
        "SHIPSKIP_RATE_LIMITS": "on",
        "SHIPSKIP_LIMIT_VOTES_PER_ADDRESS": "3/1h,3",
        "SHIPSKIP_LIMIT_TOKENS_PER_ADDRESS": "100/1h,100",
    }
    with votes_process(servers, tmp_path_factory, "untrusted", **env) as untrusted:
        tokens = [new_token(client, untrusted.url) for _ in range(5)]
        first = stream_seq(servers) + 1
        responses = [
            send_vote(client, untrusted.url, token, "ship", SMOL, TOOL, {"X-Forwarded-For": fresh_address()})
            for token in tokens
        ]
        assert [r.status_code for r in responses] == [202] * 3 + [429] * 2
        assert_refused(responses[3], "address", quota=3, window=3600)
        events = vote_events(servers, first)
        assert len(events) == 3
        assert len({event.origin.client for event in events}) == 1


def test_two_processes_share_one_limit(
    tight: ServiceProcess, tight_copy: ServiceProcess, client: httpx.Client, servers: ServerAddresses
) -> None:
    token = new_token(client, tight.url)
    address = fresh_address()
    first = stream_seq(servers) + 1
    plan = [
        (tight, "ship"),
        (tight_copy, "ship"),  # the other copy knows the ballot: unchanged (and counted)
        (tight_copy, "skip"),
        (tight, "skip"),  # the voter's three are used up, in both copies
        (tight_copy, "ship"),
        (tight, "ship"),
    ]
    responses = [
        send_vote(client, process.url, token, verdict, LLAMA, TOOL, {"X-Forwarded-For": address})
        for process, verdict in plan
    ]
    assert [r.status_code for r in responses] == [202, 200, 202, 429, 429, 429]
    assert responses[1].json() == {"status": "unchanged", "event_id": None}
    for refused in responses[3:]:
        assert_refused(refused, "voter", quota=3, window=3600)
    events = vote_events(servers, first)
    assert [e.verdict for e in events if isinstance(e, VoteCast)] == ["ship", "skip"]
    # Stored by different copies, hashed under the same day key: one address, one hash.
    assert len({event.origin.client for event in events}) == 1


def test_the_burst_cap_per_comparison(
    clean: None, servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory, client: httpx.Client
) -> None:
    env = {
        "SHIPSKIP_RATE_LIMITS": "on",
        "SHIPSKIP_TRUSTED_PROXIES": "127.0.0.1",
        "SHIPSKIP_LIMIT_VOTES_PER_COMPARISON": "4/1h,4",
    }
    with votes_process(servers, tmp_path_factory, "capped", **env) as capped:
        tokens = [new_token(client, capped.url) for _ in range(6)]
        responses = [
            send_vote(client, capped.url, token, "ship", SMOL, TOOL, {"X-Forwarded-For": fresh_address()})
            for token in tokens
        ]
        assert [r.status_code for r in responses] == [202] * 4 + [429] * 2
        assert_refused(responses[4], "comparison", quota=4, window=3600)
        # Another comparison has its own cap.
        other = send_vote(client, capped.url, tokens[5], "ship", LLAMA, TOOL, {"X-Forwarded-For": fresh_address()})
        assert other.status_code == 202, other.text


def test_rate_limits_off(
    clean: None, servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory, client: httpx.Client
) -> None:
    with votes_process(servers, tmp_path_factory, "unlimited", **{**TIGHT, "SHIPSKIP_RATE_LIMITS": "off"}) as unlimited:
        address = fresh_address()
        voters = [client.post(unlimited.url + "/v1/voters", headers={"X-Forwarded-For": address}) for _ in range(5)]
        assert [v.status_code for v in voters] == [201] * 5
        token = voters[0].json()["voter_token"]
        responses = [
            send_vote(client, unlimited.url, token, ("ship", "skip")[i % 2], LLAMA, TOOL, {"X-Forwarded-For": address})
            for i in range(6)
        ]
        assert [r.status_code for r in responses] == [202] * 6
        assert not any("ratelimit" in r.headers or "ratelimit-policy" in r.headers for r in responses + voters)
