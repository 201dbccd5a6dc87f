"""What the partitioning tests share: a catalogue with comparisons in both partitions of two, a pipeline that runs
one projector process per partition, and the projection read back to compare with a clean fold of the stream."""

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import nats

from contracts.subjects import VOTES_STREAM
from infra.stack.bootstrap import DEMO_CATALOG
from infra.stack.processes import ServiceProcess, start_service, wait_ready
from infra.stack.servers import ServerAddresses, free_port
from services.tally.fold import Ballot, BallotKey
from services.tally.partitions import Partition, partition_name, partition_of
from services.tally.store import Projection
from tests.property.model import Tallies, nonzero
from tests.support import Pipeline, reset_servers, run_cli, service_env

EXTRA_COMPARISONS = {
    # With the demo's two (both in partition 1 of 2), each partition of two holds two comparisons.
    "llama-4-scout-vs-smolvlm2-2b": ("llama-4-scout-fine-tuning-toolkit", "smolvlm2-2b"),
    "smolvlm2-2b-vs-llama-4-scout": ("smolvlm2-2b", "llama-4-scout-fine-tuning-toolkit"),
}
COMPARISON_TOOLS = {
    "llama-4-scout-vs-windsurf-swe-1": ("llama-4-scout-fine-tuning-toolkit", "windsurf-swe-1"),
    "smolvlm2-2b-vs-windsurf-swe-1": ("smolvlm2-2b", "windsurf-swe-1"),
    **EXTRA_COMPARISONS,
}


def write_catalog(folder: Path) -> Path:
    """The demo catalogue and two more comparisons of its tools, so that both partitions of two have votes."""
    catalog = json.loads(DEMO_CATALOG.read_text())
    for comparison_id, tools in EXTRA_COMPARISONS.items():
        catalog["comparisons"].append(
            {"id": comparison_id, "title": comparison_id, "lede": "A test comparison.", "tools": list(tools)}
        )
    owners = {partition_of(c, 2) for c in COMPARISON_TOOLS}
    assert owners == {0, 1}, "the test catalogue must put comparisons in both partitions of two"
    path = folder / "catalog.json"
    path.write_text(json.dumps(catalog))
    return path


@dataclass
class PartitionedPipeline:
    """The votes and read APIs, and one projector process per partition of ``partitions``."""

    pipeline: Pipeline
    partitions: int
    projectors: dict[int, ServiceProcess] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return self.pipeline.env

    @property
    def votes_url(self) -> str:
        return self.pipeline.votes_url

    @property
    def read_url(self) -> str:
        return self.pipeline.read_url

    def projector_env(self, indices: str, partitions: int | None = None) -> dict[str, str]:
        return {
            **self.pipeline.env,
            "SHIPSKIP_PARTITIONS": str(partitions or self.partitions),
            "SHIPSKIP_PROJECTOR_PARTITIONS": indices,
            "SHIPSKIP_PROJECTOR_PORT": str(free_port()),
        }

    def start_projector(self, index: int, *, wait: bool = True) -> ServiceProcess:
        log_dir = self.pipeline.log_dir / f"projector-{index}-of-{self.partitions}"
        self.projectors[index] = start_service("projector", self.projector_env(str(index)), log_dir, wait=wait)
        return self.projectors[index]

    def stop(self) -> None:
        for process in self.projectors.values():
            process.stop()
        self.pipeline.stop()


@contextmanager
def partitioned_pipeline(
    servers: ServerAddresses, log_dir: Path, partitions: int, *, routed: bool = True, **extra_env: str
) -> Iterator[PartitionedPipeline]:
    """``routed``: set up as docs/operations.md says, with ``shipskip rebuild --partitions N`` before the projectors
    start, so that the stream routes events by partition; without, each partition's consumer reads every event."""
    asyncio.run(reset_servers(servers, catalog_file=write_catalog(log_dir)))
    running = PartitionedPipeline(Pipeline(servers, service_env(servers, **extra_env), log_dir), partitions)
    if routed and partitions > 1:
        rebuilt = run_cli(running.env, "rebuild", "--partitions", str(partitions))
        assert rebuilt.returncode == 0, rebuilt.stderr
    try:
        # All at once, then each waited for, as running_pipeline does (tests/support.py).
        for index in range(partitions):
            running.start_projector(index, wait=False)
        running.pipeline.start_together(("read", "votes"))
        for process in running.projectors.values():
            wait_ready(process)
        yield running
    finally:
        running.stop()


async def stored_subjects(servers: ServerAddresses) -> list[str]:
    """The subject every event is stored under, in order."""
    nc = await nats.connect(servers.nats_url)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(VOTES_STREAM)).state.last_seq or 0
        return [str((await js.get_msg(VOTES_STREAM, seq)).subject) for seq in range(1, last + 1)]
    finally:
        await nc.close()


async def consumer_filters(servers: ServerAddresses, consumer: str) -> list[str]:
    nc = await nats.connect(servers.nats_url)
    try:
        config = (await nc.jetstream().consumer_info(VOTES_STREAM, consumer)).config
        return list(config.filter_subjects or [config.filter_subject or ""])
    finally:
        await nc.close()


async def partition_positions(servers: ServerAddresses) -> dict[str, int]:
    conn = await asyncpg.connect(servers.database_url)
    try:
        rows = await conn.fetch("select projection, seq from projection_position order by projection")
        return {r["projection"]: int(r["seq"]) for r in rows}
    finally:
        await conn.close()


def owned_heads(subjects: list[str], partitions: int) -> dict[str, int]:
    """Per partition, the sequence of the last event it folds: where its position stands once caught up (a
    partition reading only its own subjects never hears of the others' events)."""
    heads = {partition_name(i, partitions): 0 for i in range(partitions)}
    for seq, subject in enumerate(subjects, start=1):
        for i in range(partitions):
            if Partition(i, partitions).owns(subject):
                heads[partition_name(i, partitions)] = seq
    return heads


def caught_up(servers: ServerAddresses, partitions: int) -> bool:
    """Whether every partition has folded every event it owns (and reads every event when unrouted)."""
    heads = owned_heads(asyncio.run(stored_subjects(servers)), partitions)
    positions = asyncio.run(partition_positions(servers))
    return all(positions.get(name, 0) >= head for name, head in heads.items())


async def projection_tables(servers: ServerAddresses) -> tuple[Tallies, dict[BallotKey, Ballot]]:
    """The live tallies (tools with any ballot) and every ballot row."""
    conn = await asyncpg.connect(servers.database_url)
    try:
        tallies = nonzero(await Projection(0).tallies(conn))
        rows = await conn.fetch("select comparison_id, tool_id, voter_id, verdict, seq, counted from ballots")
    finally:
        await conn.close()
    return tallies, {(r[0], r[1], r[2]): Ballot(r[3], r[4], r[5]) for r in rows}
