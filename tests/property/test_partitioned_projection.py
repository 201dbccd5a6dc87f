"""Partitioned projectors through Postgres: each partition's ``Projection.apply_batch`` with its own position row,
its own at-least-once delivery of the whole stream, their transactions committed in any interleaving.

Whatever the interleaving (one partition far ahead of another, having recorded voids the other has not reached),
the tables hold exactly the tallies and ballots the independent model gives for one clean pass, and every
partition's position reaches the end of the stream. One schema of its own in the suite's database.
"""

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.events import Event, VoteCast, VoterVoided
from infra.stack.servers import ServerAddresses
from services.tally.fold import Ballot, BallotKey
from services.tally.history import minute_of
from services.tally.partitions import Partition, partition_of
from services.tally.rebuild.bulk_load import BulkFold
from services.tally.store import PROJECTION_TABLES, Projection
from tests.property.model import COMPARISONS, Delivery, Model, Tallies, draw_deliveries, nonzero, streams
from tests.property.schemas import Crash, record, scratch_schemas

SCHEMA = "property_partitions"
PARTITIONS = 3
"""With three, the model's two comparisons fall into two partitions, and the third folds only the voids."""


@dataclass
class Result:
    tallies: Tallies
    ballots: dict[BallotKey, Ballot]
    positions: list[int]
    history: set[tuple[str, str, int, int, int]]
    """The history projection's rows that hold a change."""


async def _run(conn: asyncpg.Connection, stream: list[Event], limit: int, turns: list[tuple[int, Delivery]]) -> Result:
    await conn.execute("truncate " + ", ".join(f"{SCHEMA}.{table}" for table in PROJECTION_TABLES))
    projections = [Projection(limit, schema=SCHEMA, partition=Partition(i, PARTITIONS)) for i in range(PARTITIONS)]
    for projection in projections:  # as the projector's start claims them (services/tally/layout.py)
        await conn.execute(
            f"insert into {SCHEMA}.projection_position (projection, seq) values ($1, 0)",  # noqa: S608
            projection.position_row,
        )
    for index, delivery in turns:
        records = [record(seq, stream[seq - 1]) for seq in delivery.seqs]
        try:
            async with conn.transaction():
                await projections[index].apply_batch(conn, records)
                if not delivery.commits:
                    raise Crash
        except Crash:
            pass
    ballots = f"select comparison_id, tool_id, voter_id, verdict, seq, counted from {SCHEMA}.ballots"  # noqa: S608
    rows = await conn.fetch(ballots)
    return Result(
        tallies=nonzero(await projections[0].tallies(conn)),
        ballots={(r[0], r[1], r[2]): Ballot(r[3], r[4], r[5]) for r in rows},
        positions=[await projection.position(conn) for projection in projections],
        history={
            tuple(r)
            for r in await conn.fetch(
                f"select comparison_id, tool_id, minute, ship, skip from {SCHEMA}.tally_history"  # noqa: S608
                " where ship <> 0 or skip <> 0"
            )
        },
    )


@pytest.fixture(scope="module")
def database(servers: ServerAddresses) -> Iterator[tuple[asyncio.AbstractEventLoop, asyncpg.Connection]]:
    with scratch_schemas(servers.database_url, SCHEMA) as (loop, conn):
        yield loop, conn


def test_the_model_comparisons_fall_into_different_partitions() -> None:
    assert len({partition_of(c, PARTITIONS) for c in COMPARISONS}) == len(COMPARISONS)


def _interleave(data: st.DataObject, deliveries: list[list[Delivery]]) -> list[tuple[int, Delivery]]:
    """Every partition's deliveries in its own order, the partitions' turns drawn at random."""
    queues = [list(d) for d in deliveries]
    turns: list[tuple[int, Delivery]] = []
    while any(queues):
        index = data.draw(st.sampled_from([i for i, q in enumerate(queues) if q]), label="turn")
        turns.append((index, queues[index].pop(0)))
    return turns


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(stream=streams(max_size=50), limit=st.integers(1, 3), data=st.data())
def test_partitions_folding_in_any_interleaving_give_the_model_tallies(
    database: tuple[asyncio.AbstractEventLoop, asyncpg.Connection],
    stream: list[Event],
    limit: int,
    data: st.DataObject,
) -> None:
    loop, conn = database
    model = Model(limit).run(stream)
    deliveries = [draw_deliveries(data, len(stream), crashes=True) for _ in range(PARTITIONS)]
    result = loop.run_until_complete(_run(conn, stream, limit, _interleave(data, deliveries)))
    assert result.tallies == model.tallies()
    assert result.ballots == model.ballots
    assert result.positions == [len(stream)] * PARTITIONS
    # The history too: each partition erases a void's voter from its own comparisons, whenever it reaches the void.
    clean = BulkFold(limit)
    clean.take([(seq, r.subject, r.data) for seq, r in ((s, record(s, e)) for s, e in enumerate(stream, start=1))])
    assert result.history == set(clean.rows()["tally_history"])


def test_a_void_reached_by_one_partition_first_erases_each_comparison_once(
    database: tuple[asyncio.AbstractEventLoop, asyncpg.Connection],
) -> None:
    # c-two's partition folds the casts; the other one folds them (not its own) and the void: the voter's c-two
    # ballot is in the table with its history, but erasing it is c-two's partition's work, done once it folds the void.
    loop, conn = database
    at = datetime(2026, 11, 24, 0, 0, 1, tzinfo=UTC)
    stream: list[Event] = [
        VoteCast("cast-1", "c-two", "tool-a", "ship", "voter-1", at),
        VoteCast("cast-2", "c-two", "tool-b", "ship", "voter-2", at),
        VoterVoided("void-1", "voter-1", "test", at),
    ]
    two = partition_of("c-two", PARTITIONS)
    turns = [(two, Delivery([1, 2])), (1 - two, Delivery([1, 2, 3])), (two, Delivery([3]))]
    result = loop.run_until_complete(_run(conn, stream, 1, turns))
    assert result.history == {("c-two", "tool-b", minute_of(at), 1, 0)}
