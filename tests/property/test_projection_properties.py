"""The fold through Postgres: ``Projection.apply_batch`` (services/tally/store.py), one transaction a batch, as
the projector runs it, against the real server.

For random streams of casts, changes, retractions and voids, under the counting policy: one clean batch, and any
at-least-once delivery (batches cut anywhere, redelivered from before the recorded position, duplicated,
shuffled, rolled back by a crash before the commit), leave exactly the tallies, ballots and position the
independent model gives. One schema of its own in the suite's database, emptied between examples.
"""

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.events import Event
from infra.stack.servers import ServerAddresses
from services.tally.fold import Ballot, BallotKey
from services.tally.store import PROJECTION_TABLES, Projection
from tests.property.model import Delivery, Model, Tallies, draw_deliveries, nonzero, streams
from tests.property.schemas import Crash, record, scratch_schemas

SCHEMA = "property_projection"


@dataclass
class Database:
    loop: asyncio.AbstractEventLoop
    conn: asyncpg.Connection

    def run_example(self, stream: list[Event], limit: int, deliveries: list[Delivery]) -> "Result":
        return self.loop.run_until_complete(_run(self.conn, stream, limit, deliveries))


@dataclass
class Result:
    tallies: Tallies
    ballots: dict[BallotKey, Ballot]
    position: int


async def _run(conn: asyncpg.Connection, stream: list[Event], limit: int, deliveries: list[Delivery]) -> Result:
    await conn.execute("truncate " + ", ".join(f"{SCHEMA}.{table}" for table in PROJECTION_TABLES))
    projection = Projection(limit, schema=SCHEMA)
    for delivery in deliveries:
        records = [record(seq, stream[seq - 1]) for seq in delivery.seqs]
        try:
            async with conn.transaction():
                await projection.apply_batch(conn, records)
                if not delivery.commits:
                    raise Crash
        except Crash:
            pass
    ballots = f"select comparison_id, tool_id, voter_id, verdict, seq, counted from {SCHEMA}.ballots"  # noqa: S608
    rows = await conn.fetch(ballots)
    return Result(
        tallies=nonzero(await projection.tallies(conn)),
        ballots={(r[0], r[1], r[2]): Ballot(r[3], r[4], r[5]) for r in rows},
        position=await projection.position(conn),
    )


@pytest.fixture(scope="module")
def database(servers: ServerAddresses) -> Iterator[Database]:
    with scratch_schemas(servers.database_url, SCHEMA) as (loop, conn):
        yield Database(loop, conn)


_slow = settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])


@_slow
@given(stream=streams(max_size=50), limit=st.integers(1, 3), data=st.data())
def test_any_at_least_once_delivery_through_postgres_gives_the_model_tallies(
    database: Database, stream: list[Event], limit: int, data: st.DataObject
) -> None:
    model = Model(limit).run(stream)

    clean = database.run_example(stream, limit, [Delivery(list(range(1, len(stream) + 1)))])
    assert clean.tallies == model.tallies()
    assert clean.ballots == model.ballots
    assert clean.position == len(stream)

    delivered = database.run_example(stream, limit, draw_deliveries(data, len(stream), crashes=True))
    assert delivered.tallies == model.tallies()
    assert delivered.ballots == model.ballots
    assert delivered.position == len(stream)
