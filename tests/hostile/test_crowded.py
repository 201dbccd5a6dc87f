"""Connection exhaustion (issue 21): thousands of idle or stalled connections, and one address with many live
streams, leave the APIs answering everyone else.

granian takes a connection per slot of its ``--backpressure`` from accept to close; with its default (1024 for one
worker) ~1,100 idle keep-alive connections left the votes API answering nobody. The crowds here are kept up by a
process of their own (tests/hostile/crowd.py); each fresh client opens a new connection and must be answered
within ``ANSWER_WITHIN_S``.
"""

import asyncio
import resource
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from infra.stack.servers import ServerAddresses
from tests.hostile.crowd import COMPARISON, CrowdSpec, crowd_process, new_tokens, probe
from tests.support import Pipeline, running_pipeline

CROWD = 2000
"""Connections held against each API, as many as issue 21 asks for."""
ANSWER_WITHIN_S = 1.0
"""A fresh client's vote and read are answered within this (issue 21), or count as unanswered."""
FRESH_CLIENTS = 20
IDLE_TIMEOUT_MS = 3000
"""How long a connection may stay silent before a request head, set short here so the test can wait it out; the
idle crowd asks every ``PING_S``, within it, so its connections stay held."""
PING_S = 2.0
STREAMS_PER_ADDRESS = 3
ENV = {
    "GRANIAN_HTTP1_HEADER_READ_TIMEOUT": str(IDLE_TIMEOUT_MS),
    "SHIPSKIP_SSE_MAX_STREAMS_PER_ADDRESS": str(STREAMS_PER_ADDRESS),
    # The test's loopback connections stand in for a proxy: its X-Forwarded-For names the client.
    "SHIPSKIP_TRUSTED_PROXIES": "127.0.0.1",
}


def needs_open_files(count: int) -> None:
    """The crowd's process opens ``count`` connections, each an open file (it raises its soft limit to that)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count + 256:
        pytest.skip(f"{count} connections need {count + 256} open files; the hard limit is {hard} (ulimit -Hn)")


@pytest.fixture(scope="module")
def pipeline(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(servers, tmp_path_factory.mktemp("crowded-logs"), **ENV) as running:
        yield running


def ports(pipeline: Pipeline) -> tuple[int, int]:
    votes, read = pipeline.processes["votes"].port, pipeline.processes["read"].port
    assert votes is not None
    assert read is not None
    return votes, read


def assert_all_answered_in_time(pipeline: Pipeline, tokens: list[str]) -> None:
    votes_port, read_port = ports(pipeline)
    probes = asyncio.run(probe(votes_port, read_port, tokens, within_s=ANSWER_WITHIN_S))
    summary = probes.summary()
    assert None not in probes.votes, f"a fresh vote went unanswered for {ANSWER_WITHIN_S} s: {summary}"
    assert None not in probes.reads, f"a fresh read went unanswered for {ANSWER_WITHIN_S} s: {summary}"
    assert set(probes.statuses) == {200, 202}, summary


# -- crowds of connections -----------------------------------------------------------------------------------------


def test_fresh_clients_are_answered_while_2000_idle_keep_alive_connections_are_held_on_each_api(
    pipeline: Pipeline,
) -> None:
    needs_open_files(2 * CROWD)
    votes_port, read_port = ports(pipeline)
    tokens = new_tokens(pipeline.votes_url, FRESH_CLIENTS)
    crowds: list[CrowdSpec] = [(votes_port, CROWD, "idle", ""), (read_port, CROWD, "idle", "")]
    with crowd_process(crowds, interval_s=PING_S) as held:
        assert held.value == 2 * CROWD, f"the servers took {held.value} of the crowd's {2 * CROWD} connections"
        assert_all_answered_in_time(pipeline, tokens)


def test_fresh_votes_are_answered_while_2000_bodies_stall(pipeline: Pipeline) -> None:
    needs_open_files(CROWD)
    votes_port, _ = ports(pipeline)
    tokens = new_tokens(pipeline.votes_url, FRESH_CLIENTS + 1)
    with crowd_process([(votes_port, CROWD, "stalled", tokens[0])]) as held:
        assert held.value >= CROWD * 9 // 10, f"only {held.value} of {CROWD} stalled bodies reached the server"
        assert_all_answered_in_time(pipeline, tokens[1:])


def closed_within(conn: socket.socket, seconds: float) -> float | None:
    """When the server closed ``conn`` (seconds from now), reading whatever it sent; None if it kept it open."""
    started = time.monotonic()
    conn.settimeout(seconds)
    try:
        while conn.recv(65536):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - started


def test_a_silent_connection_is_closed_after_the_idle_timeout_whether_new_or_kept_alive(pipeline: Pipeline) -> None:
    limit_s = IDLE_TIMEOUT_MS / 1000 + 5
    for port in ports(pipeline):
        with (
            socket.create_connection(("127.0.0.1", port)) as silent,
            socket.create_connection(("127.0.0.1", port)) as kept_alive,
        ):
            kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert kept_alive.recv(65536).startswith(b"HTTP/1.1 200 ")
            # Neither sends anything more: both must be let go (a connection that never sent a byte was held for
            # good by granian's HTTP version detection).
            assert closed_within(silent, limit_s) is not None, f"port {port} held a silent new connection"
            assert closed_within(kept_alive, limit_s) is not None, f"port {port} held an idle kept-alive connection"


# -- live streams per client address -------------------------------------------------------------------------------


@dataclass
class OpenStream:
    status: int
    head: bytes
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


async def open_stream(port: int, source: str = "127.0.0.1", forwarded_for: str | None = None) -> OpenStream:
    """A stream request from ``source`` (a loopback address), with its answer's head; left open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    extra = f"X-Forwarded-For: {forwarded_for}\r\n" if forwarded_for else ""
    writer.write(
        f"GET /v1/comparisons/{COMPARISON}/community/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        head += await asyncio.wait_for(reader.read(65536), 10.0)  # the error's body, for the messages
    return OpenStream(status, head, writer)


def test_one_address_holds_at_most_its_share_of_streams_and_everyone_else_still_gets_theirs(
    pipeline: Pipeline,
) -> None:
    _, read_port = ports(pipeline)

    async def scenario() -> None:
        opened: list[OpenStream] = []
        try:
            # A burst from one address, all at once: exactly its share is admitted.
            burst = await asyncio.gather(*(open_stream(read_port) for _ in range(4 * STREAMS_PER_ADDRESS)))
            opened += burst
            admitted = [stream for stream in burst if stream.status == 200]
            refused = [stream for stream in burst if stream.status != 200]
            assert len(admitted) == STREAMS_PER_ADDRESS, [s.head for s in refused[:1]]
            for stream in refused:
                assert stream.status == 429, stream.head
                assert b"retry-after: " in stream.head.lower(), stream.head
                assert b'"error":"too_many_streams_from_address"' in stream.head, stream.head
            # Everyone else: another peer, and a client a trusted proxy names.
            opened.append(other := await open_stream(read_port, source="127.0.0.2"))
            assert other.status == 200, other.head
            proxied = [await open_stream(read_port, forwarded_for="198.51.100.7") for _ in range(STREAMS_PER_ADDRESS)]
            opened += proxied
            assert [s.status for s in proxied] == [200] * STREAMS_PER_ADDRESS, [s.head for s in proxied]
            opened.append(beyond := await open_stream(read_port, forwarded_for="198.51.100.7"))
            assert beyond.status == 429, beyond.head
            # A stream that ends gives its place back.
            admitted[0].close()
            await asyncio.sleep(0.5)
            opened.append(again := await open_stream(read_port))
            assert again.status == 200, again.head
        finally:
            for stream in opened:
                stream.close()

    asyncio.run(scenario())
