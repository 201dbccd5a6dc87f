"""Partitioning against the real servers: the mapping is the one nats-server's own partition() makes, a projector
refuses a projection folded in another number of partitions, and changing the number on a live system is a
rebuild (``shipskip rebuild --partitions N``) after which projectors of the old number stop at their next batch
instead of counting anything twice."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.api import StorageType, StreamConfig, SubjectTransform

from infra.stack.processes import ServiceProcess, start_service
from infra.stack.servers import ServerAddresses
from services.tally.partitions import partition_of
from services.tally.routing import route_stream
from tests.partitioned import (
    COMPARISON_TOOLS,
    PartitionedPipeline,
    caught_up,
    consumer_filters,
    partition_positions,
    partitioned_pipeline,
    stored_subjects,
)
from tests.support import new_voter, run_cli, send_vote, stream_seq, wait_until

SLUGS = [*COMPARISON_TOOLS, *(f"tool-{i}-vs-tool-{i * 7 % 13}" for i in range(60)), "a", "x-vs-y"]


async def stored_partitions(servers: ServerAddresses, count: int) -> dict[str, int]:
    """Publish one message per slug to a scratch stream that maps subjects with {{partition(count,1)}}, and read
    back which partition the server put each one in."""
    nc = await nats.connect(servers.nats_url)
    js = nc.jetstream()
    name, prefix = f"PARTITION_CHECK_{count}", f"partition-check-{count}"
    try:
        await js.add_stream(
            StreamConfig(
                name=name,
                subjects=[f"{prefix}.*"],
                storage=StorageType.MEMORY,
                subject_transform=SubjectTransform(
                    src=f"{prefix}.*", dest=f"{prefix}.{{{{partition({count},1)}}}}.{{{{wildcard(1)}}}}"
                ),
            )
        )
        for slug in SLUGS:
            await js.publish(f"{prefix}.{slug}", b"-")
        stored: dict[str, int] = {}
        for seq in range(1, len(SLUGS) + 1):
            subject = (await js.get_msg(name, seq)).subject
            assert subject is not None
            _, partition, slug = subject.split(".", 2)
            stored[slug] = int(partition)
        return stored
    finally:
        await js.delete_stream(name)
        await nc.close()


@pytest.mark.parametrize("count", [2, 3, 7])
def test_comparisons_map_to_the_partitions_nats_server_would_map_them_to(servers: ServerAddresses, count: int) -> None:
    stored = asyncio.run(stored_partitions(servers, count))
    assert stored == {slug: partition_of(slug, count) for slug in SLUGS}
    assert len(set(stored.values())) == count


def cast(client: httpx.Client, running: PartitionedPipeline, comparison: str, verdict: str = "ship") -> None:
    token = new_voter(client, running.votes_url)
    tool = COMPARISON_TOOLS[comparison][0]
    response = send_vote(client, running.votes_url, token, verdict, comparison, tool)
    assert response.status_code == 202, response.text


def cast_everywhere(client: httpx.Client, running: PartitionedPipeline) -> None:
    """A vote in every comparison: a batch for every partition, whatever the number."""
    for comparison in COMPARISON_TOOLS:
        cast(client, running, comparison)


def projector(running: PartitionedPipeline, partitions: int, indices: str, name: str) -> ServiceProcess:
    log_dir = running.pipeline.log_dir / name
    return start_service("projector", running.projector_env(indices, partitions), log_dir)


def exits_with(process: ServiceProcess, timeout: float = 60.0) -> int:
    try:
        return process.process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{process.name} did not stop:\n{process.log_tail()}") from None


def assert_verified(running: PartitionedPipeline, servers: ServerAddresses, names: list[str]) -> None:
    last = stream_seq(servers)
    wait_until(lambda: caught_up(servers, len(names)), timeout=60)
    assert list(asyncio.run(partition_positions(servers))) == names
    verified = run_cli(running.env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"verified up to stream position {last}: 0 differences" in verified.stdout


def new_subjects(servers: ServerAddresses, after: int) -> list[str]:
    return asyncio.run(stored_subjects(servers))[after:]


def served_ships(running: PartitionedPipeline, comparison: str, tool: str) -> int:
    served = httpx.get(f"{running.read_url}/v1/comparisons/{comparison}/community", timeout=10).json()
    return int(next(t["ship"] for t in served["tools"] if t["tool_id"] == tool))


def test_another_number_of_partitions_is_refused_until_a_rebuild_repartitions_and_the_old_projectors_stop(
    servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory
) -> None:
    log_dir: Path = tmp_path_factory.mktemp("repartition")
    with partitioned_pipeline(servers, log_dir, 1) as running, httpx.Client(timeout=10) as client:
        cast_everywhere(client, running)
        assert_verified(running, servers, ["tally"])

        # Two partitions over a projection folded in one: one clear line, and nothing folded.
        refused = subprocess.run(
            [sys.executable, "-m", "services.cli", "projector"],
            env=running.projector_env("0,1", partitions=2),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert refused.returncode == 2
        line = refused.stderr.strip().splitlines()[-1]
        assert line.startswith("shipskip: SHIPSKIP_PARTITIONS=2, but the projection was folded in 1 partition(s)")
        assert "shipskip rebuild --partitions 2" in line
        assert asyncio.run(partition_positions(servers)) == {"tally": stream_seq(servers)}

        # Re-partition while the one-partition projector runs: it stops at its next batch, loudly.
        assert run_cli(running.env, "rebuild", "--partitions", "2").returncode == 0
        position = stream_seq(servers)
        assert asyncio.run(partition_positions(servers)) == {"tally-0-of-2": position, "tally-1-of-2": position}
        cast_everywhere(client, running)
        assert all(subject.startswith("votes.v1.r2.") for subject in new_subjects(servers, position))
        assert exits_with(running.projectors[0]) == 2
        assert "partition tally no longer exists" in running.projectors[0].log_tail()

        # Two projectors, one partition each, pick up from the rebuilt position.
        first = projector(running, 2, "0", "p0")
        second = projector(running, 2, "1", "p1")
        cast_everywhere(client, running)
        assert_verified(running, servers, ["tally-0-of-2", "tally-1-of-2"])
        status = json.loads(run_cli(running.env, "status", "--json").stdout)
        assert [p["partition"] for p in status["partitions"]] == ["tally-0-of-2", "tally-1-of-2"]

        # And back to one: both stop at their next batch; a single projector takes over.
        assert run_cli(running.env, "rebuild", "--partitions", "1").returncode == 0
        position = stream_seq(servers)
        cast_everywhere(client, running)
        assert all(subject.count(".") == 2 for subject in new_subjects(servers, position))
        assert exits_with(first) == 2
        assert exits_with(second) == 2
        single = projector(running, 1, "0", "single")
        try:
            cast_everywhere(client, running)
            assert_verified(running, servers, ["tally"])
            # One vote in each of the five rounds, none lost, none counted twice, and served.
            wait_until(lambda: served_ships(running, "smolvlm2-2b-vs-llama-4-scout", "smolvlm2-2b") == 5)
        finally:
            single.stop()


def test_a_rebuild_into_partitions_refuses_a_single_comparison(
    servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory
) -> None:
    log_dir: Path = tmp_path_factory.mktemp("repartition-one")
    with partitioned_pipeline(servers, log_dir, 1) as running:
        refused = run_cli(running.env, "rebuild", "--partitions", "2", "--comparison", "smolvlm2-2b-vs-llama-4-scout")
        assert refused.returncode == 2
        assert "--partitions" in refused.stderr
        assert asyncio.run(partition_positions(servers)) == {"tally": 0}


def test_a_routing_that_is_not_the_projections_makes_the_projectors_read_everything_and_stay_exact(
    servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """As after a re-partitioning rebuild that routed the stream and then failed: each partition's consumer no
    longer matches the new subjects, and a projector that noticed nothing would fall behind for good."""
    log_dir: Path = tmp_path_factory.mktemp("routing-mismatch")
    names = ["tally-0-of-2", "tally-1-of-2"]
    with partitioned_pipeline(servers, log_dir, 2) as running, httpx.Client(timeout=10) as client:
        cast_everywhere(client, running)
        assert_verified(running, servers, names)
        assert all(len(asyncio.run(consumer_filters(servers, name))) > 1 for name in names)

        asyncio.run(route(servers, 3))
        position = stream_seq(servers)
        cast_everywhere(client, running)
        assert all(subject.startswith("votes.v1.r3.") for subject in new_subjects(servers, position))
        assert_verified(running, servers, names)
        assert [asyncio.run(consumer_filters(servers, name)) for name in names] == [["votes.v1.>"]] * 2

        # A rebuild into the same two partitions routes the stream by two again; the consumers narrow again.
        assert run_cli(running.env, "rebuild", "--partitions", "2").returncode == 0
        cast_everywhere(client, running)
        assert_verified(running, servers, names)
        wait_until(lambda: all(len(asyncio.run(consumer_filters(servers, name))) > 1 for name in names), timeout=30)
        cast_everywhere(client, running)
        assert_verified(running, servers, names)
        wait_until(lambda: served_ships(running, "smolvlm2-2b-vs-llama-4-scout", "smolvlm2-2b") == 4)


async def route(servers: ServerAddresses, partitions: int) -> None:
    nc = await nats.connect(servers.nats_url)
    try:
        await route_stream(nc.jetstream(), partitions)
    finally:
        await nc.close()
