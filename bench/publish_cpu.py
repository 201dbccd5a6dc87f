"""CPU per acknowledged vote publish: the votes service's publisher and nats-py's ``publish_async`` (not part of
``make bench``).

    .venv/bin/python -m bench.publish_cpu [PUBLISHES] [ROUNDS]

Starts embedded servers in a temporary folder and publishes PUBLISHES votes (default 19,200) from 32 concurrent
tasks, each awaited until JetStream acknowledged it, as a vote is before its 202, every one under a message id of its
own: through ``services.votes.publisher.VotePublisher`` (one inbox subscription, a future per publish, one timer for
the deadlines), and through ``js.publish_async`` (nats-py's own futures on its JetStream inbox), ROUNDS times each
(default 3), alternately. Each round prints the process's CPU time per publish and the publishes a second.
"""

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from bench.one_path import cpu_s, run_on_embedded_servers
from contracts.events import VoteCast, encode_event
from contracts.subjects import votes_subject
from infra.stack.servers import ServerAddresses
from services.shared.event_ids import new_event_id
from services.shared.jetstream import connect, ensure_votes_stream
from services.votes.publisher import VotePublisher

_CONCURRENCY = 32


async def _measure(servers: ServerAddresses, publishes: int, rounds: int) -> None:
    nc = await connect(servers.nats, "shipskip-bench")
    js = nc.jetstream(publish_async_max_pending=4 * _CONCURRENCY)
    await ensure_votes_stream(js, 120)
    vote = VoteCast(
        event_id=new_event_id(), comparison_id="llama-4-scout-vs-windsurf-swe-1", tool_id="windsurf-swe-1",
        verdict="ship", voter_id=secrets.token_hex(8), at=datetime.now(UTC),
    )  # fmt: skip
    subject, payload = votes_subject(vote.comparison_id), encode_event(vote)
    publisher = VotePublisher(timeout_s=5)
    await publisher.start(servers.nats, "shipskip-bench-publishes")

    async def through_publisher() -> None:
        await publisher.publish(vote, new_event_id())

    async def through_publish_async() -> None:
        ack = await js.publish_async(subject, payload, headers={"Nats-Msg-Id": new_event_id()})
        await ack

    ways: dict[str, Callable[[], Awaitable[None]]] = {
        "VotePublisher": through_publisher,
        "publish_async": through_publish_async,
    }
    for _ in range(rounds):
        for name, one in ways.items():

            async def publish(count: int, one: Callable[[], Awaitable[None]] = one) -> None:
                for _ in range(count):
                    await one()

            await asyncio.gather(*(publish(50) for _ in range(_CONCURRENCY)))  # warm-up
            cpu, wall = cpu_s(), time.perf_counter()
            await asyncio.gather(*(publish(publishes // _CONCURRENCY) for _ in range(_CONCURRENCY)))
            cpu, wall = cpu_s() - cpu, time.perf_counter() - wall
            done = publishes // _CONCURRENCY * _CONCURRENCY
            print(f"{name:14} {1e6 * cpu / done:6.1f} µs of CPU a publish, {done / wall:7,.0f} publishes/s", flush=True)
    await publisher.close()
    await nc.drain()


def main() -> None:
    run_on_embedded_servers("publish-cpu", _measure, 19_200)


if __name__ == "__main__":
    main()
