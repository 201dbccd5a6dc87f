"""One projector against projectors of partitions, catching up on the same stream (not part of ``make bench``).

    .venv/bin/python -m bench.partition_catchup [EVENTS]

Starts embedded servers in a temporary folder, appends EVENTS votes (default 100,000) over four comparisons, two in
each partition of two, and then, twice over, folds them into empty tables: with one projector (SHIPSKIP_PARTITIONS=1),
with two processes of one partition each side by side, and with the process of partition 0 alone; each of those
with the stream routed by partition (services/tally/routing.py: a consumer receives only its partition's events)
and not (each receives every event and passes over the other partition's). Prints the wall time and the CPU
seconds of each projector process.
"""

import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import nats

from contracts.events import VoteCast, VoteEvent, VoteRetracted, encode_event
from contracts.subjects import VOTES_STREAM, votes_subject
from infra.migrate import migrate
from infra.stack.processes import ServiceProcess, start_service
from infra.stack.servers import EmbeddedServers, ServerAddresses, free_port
from services.tally.partitions import partition_name, partition_of
from services.tally.routing import record_routing, route_stream
from tests.partitioned import COMPARISON_TOOLS, owned_heads, partition_positions, write_catalog
from tests.support import publish_raw, reset_servers, service_env, stream_last_seq


def votes(count: int) -> list[tuple[str, bytes]]:
    rng = random.Random(5)
    voters = [f"{i:032x}" for i in range(5000)]
    start = datetime(2026, 11, 23, tzinfo=UTC)
    messages = []
    for i in range(count):
        comparison = rng.choice(list(COMPARISON_TOOLS))
        tool = rng.choice(COMPARISON_TOOLS[comparison])
        voter = rng.choice(voters)
        at = start + timedelta(milliseconds=i)
        event: VoteEvent
        if rng.random() < 0.15:
            event = VoteRetracted(f"r{i}", comparison, tool, voter, at)
        else:
            event = VoteCast(f"c{i}", comparison, tool, rng.choice(["ship", "skip"]), voter, at)
        messages.append((votes_subject(comparison), encode_event(event)))
    return messages


async def route(servers: ServerAddresses, partitions: int) -> None:
    nc = await nats.connect(servers.nats_url)
    try:
        await route_stream(nc.jetstream(), partitions)
    finally:
        await nc.close()


async def empty_projection(servers: ServerAddresses, routed: bool) -> None:
    """Empty tables and no consumers: every run folds the whole stream from the start."""
    nc = await nats.connect(servers.nats_url)
    try:
        js = nc.jetstream()
        for info in await js.consumers_info(VOTES_STREAM):
            await js.delete_consumer(VOTES_STREAM, info.name)
    finally:
        await nc.close()
    conn = await asyncpg.connect(servers.database_url)
    try:
        await conn.execute("drop schema public cascade; create schema public")
    finally:
        await conn.close()
    await migrate(servers.database_url)
    if routed:  # as `shipskip rebuild --partitions 2` records it, routed from the first event on
        conn = await asyncpg.connect(servers.database_url)
        try:
            await record_routing(conn, 2, 1)
        finally:
            await conn.close()


def cpu_seconds(process: ServiceProcess) -> float:
    fields = Path(f"/proc/{process.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def catch_up(
    servers: ServerAddresses,
    env: dict[str, str],
    partitions: int,
    indices: list[int],
    heads: dict[str, int],
    routed: bool,
) -> str:
    asyncio.run(empty_projection(servers, routed))
    log_dir = Path(tempfile.gettempdir()) / "shipskip-partition-catchup"
    started = time.perf_counter()
    processes = [
        start_service(
            "projector",
            {
                **env,
                "SHIPSKIP_PARTITIONS": str(partitions),
                "SHIPSKIP_PROJECTOR_PARTITIONS": str(index),
                "SHIPSKIP_PROJECTOR_PORT": str(free_port()),
            },
            log_dir / partition_name(index, partitions),
            wait=False,
        )
        for index in indices
    ]
    names = [partition_name(index, partitions) for index in indices]
    while not all(asyncio.run(partition_positions(servers)).get(name, 0) >= heads[name] for name in names):
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    cpu = [cpu_seconds(process) for process in processes]
    for process in processes:
        process.stop()
    return f"{elapsed:5.1f} s wall, CPU seconds per projector process {', '.join(f'{c:.1f}' for c in cpu)}"


def main(count: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="shipskip-partition-catchup-"))
    try:
        with EmbeddedServers(data) as embedded:
            servers = embedded.addresses
            asyncio.run(reset_servers(servers, catalog_file=write_catalog(data)))
            messages = votes(count)
            asyncio.run(route(servers, 2))
            asyncio.run(publish_raw(servers, messages))
            last = asyncio.run(stream_last_seq(servers))
            mine = sum(1 for subject, _ in messages if partition_of(subject.removeprefix("votes.v1."), 2) == 0)
            routed_heads = owned_heads([subject for subject, _ in messages], 2)  # the stream was empty before
            env = service_env(servers, SHIPSKIP_BALLOTS_PER_CLIENT_DAY="1000000")
            runs = [
                ("one projector", 1, [0]),
                ("two partitions, two processes", 2, [0, 1]),
                (f"partition 0 alone ({mine} folded)", 2, [0]),
            ]
            for round_ in (1, 2):
                print(f"round {round_}, {last} events", flush=True)
                for routed in (True, False):
                    for label, partitions, indices in runs:
                        heads = (
                            routed_heads
                            if routed and partitions > 1
                            else {"tally": last} | dict.fromkeys(routed_heads, last)
                        )
                        took = catch_up(servers, env, partitions, indices, heads, routed)
                        print(f"  {'routed' if routed else 'unrouted':<9} {label:<36} {took}", flush=True)
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
