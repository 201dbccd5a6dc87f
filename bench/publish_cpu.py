"""CPU per acknowledged vote publish, on the publisher's own connection and on nats-py's (not part of ``make bench``).

    .venv/bin/python -m bench.publish_cpu [PUBLISHES] [ROUNDS]

Starts embedded servers in a temporary folder and publishes PUBLISHES votes (default 19,200) from 32 concurrent
tasks through ``services.votes.publisher.VotePublisher``, each awaited until JetStream acknowledged it, as a vote
is before its 202: ROUNDS times (default 3) for each connection, alternately. Each round prints the process's CPU
time per publish and the publishes a second.
"""

import asyncio
import secrets
import time
from datetime import UTC, datetime

import nats

from bench.one_path import cpu_s, run_on_embedded_servers
from contracts.events import VoteCast
from infra.stack.servers import ServerAddresses
from services.shared.event_ids import new_event_id
from services.shared.jetstream import ensure_votes_stream
from services.votes.publisher import VotePublisher

_CONCURRENCY = 32


async def _measure(servers: ServerAddresses, publishes: int, rounds: int) -> None:
    nats_url = servers.nats_url
    nc = await nats.connect(nats_url)
    await ensure_votes_stream(nc.jetstream(), 120)
    vote = VoteCast(
        event_id=new_event_id(), comparison_id="llama-4-scout-vs-windsurf-swe-1", tool_id="windsurf-swe-1",
        verdict="ship", voter_id=secrets.token_hex(8), at=datetime.now(UTC),
    )  # fmt: skip
    for connection in ("own", "nats-py") * rounds:
        publisher = VotePublisher(nc, timeout_s=5)
        if connection == "own":
            await publisher.start(nats_url, "shipskip-bench")

        async def publish(count: int, publisher: VotePublisher = publisher) -> None:
            for _ in range(count):
                await publisher.publish(vote, new_event_id())

        await asyncio.gather(*(publish(50) for _ in range(_CONCURRENCY)))  # warm-up
        cpu, wall = cpu_s(), time.perf_counter()
        await asyncio.gather(*(publish(publishes // _CONCURRENCY) for _ in range(_CONCURRENCY)))
        cpu, wall = cpu_s() - cpu, time.perf_counter() - wall
        done = publishes // _CONCURRENCY * _CONCURRENCY
        print(
            f"{connection:8} {1e6 * cpu / done:6.1f} µs of CPU a publish, {done / wall:7,.0f} publishes/s", flush=True
        )
        await publisher.close()
    await nc.drain()


def main() -> None:
    run_on_embedded_servers("publish-cpu", _measure, 19_200)


if __name__ == "__main__":
    main()
