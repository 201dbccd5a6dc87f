"""The history projection through Postgres, for random timed streams of casts, changes of mind, retractions and
voids under the counting policy, delivered at least once (redelivered, duplicated, shuffled, crashed batches):

- every point of the hourly and daily series equals the independent model's figures as they stood at the end of
  its bucket, a voided voter taken out of every point (tests/property/model.py: ``history_at``);
- ``as_of`` at any instant equals the model's figures from the events stamped before its minute;
- the last point equals the live tallies;
- a rebuild's first pass (services/tally/rebuild/bulk_load.py) gives the same series point for point, and
  ``verify``'s in-memory fold the same rows.
"""

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.events import Event
from infra.stack.servers import ServerAddresses
from services.tally.fold import FoldState, fold
from services.tally.history import HistoryBatch, minute_of, time_of
from services.tally.read.history import BUCKET_MINUTES, Series, Window, read_as_of, read_series
from services.tally.rebuild.bulk_load import BulkFold
from services.tally.rebuild.rebuild import history_of
from services.tally.store import PROJECTION_TABLES, Projection
from tests.property.model import COMPARISONS, TOOLS, Delivery, draw_deliveries, history_at, timed_streams
from tests.property.schemas import Crash, record, scratch_schemas

SCHEMA = "property_history"
REBUILT = "property_history_rebuilt"


@dataclass
class Database:
    loop: asyncio.AbstractEventLoop
    conn: asyncpg.Connection


@pytest.fixture(scope="module")
def database(servers: ServerAddresses) -> Iterator[Database]:
    with scratch_schemas(servers.database_url, SCHEMA, REBUILT) as (loop, conn):
        yield Database(loop, conn)


async def _project(conn: asyncpg.Connection, stream: list[Event], limit: int, deliveries: list[Delivery]) -> None:
    await conn.execute("truncate " + ", ".join(f"{s}.{t}" for s in (SCHEMA, REBUILT) for t in PROJECTION_TABLES))
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


async def _rebuild(conn: asyncpg.Connection, stream: list[Event], limit: int, cuts: list[int]) -> None:
    """A rebuild's first pass over the stream in the batches ``cuts`` makes, written into REBUILT."""
    bulk = BulkFold(limit)
    records = [record(seq, event) for seq, event in enumerate(stream, start=1)]
    for start, end in itertools.pairwise([0, *sorted(cuts), len(records)]):
        bulk.take(records[start:end])
    rows = bulk.rows()["tally_history"]
    if rows:
        columns = ("comparison_id", "tool_id", "minute", "ship", "skip")
        await conn.copy_records_to_table("tally_history", records=rows, columns=columns, schema_name=REBUILT)


async def _series(conn: asyncpg.Connection, schema: str, win: Window) -> dict[str, Series]:
    return {c: await read_series(conn, c, list(TOOLS), win, schema=schema) for c in COMPARISONS}


def _window(stream: list[Event], bucket: str) -> Window:
    size = BUCKET_MINUTES[bucket]
    first = minute_of(stream[0].at) // size * size - size  # one empty bucket before the first event
    end = (minute_of(stream[-1].at) // size + 2) * size  # and one after the last
    return Window(bucket, first, end)


async def _live_rows(conn: asyncpg.Connection) -> dict[tuple[str, str, int], tuple[int, int]]:
    rows = await conn.fetch(f"select comparison_id, tool_id, minute, ship, skip from {SCHEMA}.tally_history")  # noqa: S608
    return {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows if r[3] or r[4]}


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(stream=timed_streams(), limit=st.integers(1, 3), data=st.data())
def test_history_is_the_model_at_every_bucket_end_as_of_any_time_and_after_a_rebuild(
    database: Database, stream: list[Event], limit: int, data: st.DataObject
) -> None:
    run = database.loop.run_until_complete
    conn = database.conn
    run(_project(conn, stream, limit, draw_deliveries(data, len(stream), crashes=True)))

    for bucket in BUCKET_MINUTES:
        win = _window(stream, bucket)
        series = run(_series(conn, SCHEMA, win))
        for comparison in COMPARISONS:
            for tool in TOOLS:
                points = series[comparison][tool]
                assert len(points) == win.buckets
                for end, ship, skip in points:
                    assert (ship, skip) == history_at(stream, limit, end).get((comparison, tool), (0, 0)), (bucket, end)
        # A rebuild gives the same series, point for point.
        cuts = data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=5), label="rebuild batches")
        run(conn.execute(f"truncate {REBUILT}.tally_history"))
        run(_rebuild(conn, stream, limit, cuts))
        assert run(_series(conn, REBUILT, win)) == series

    # The last point is the live figure.
    tallies = run(Projection(limit, schema=SCHEMA).tallies(conn))
    after_all = history_at(stream, limit, stream[-1].at + timedelta(minutes=1))
    assert {key: (c.ship, c.skip) for key, c in tallies.items() if c.ship or c.skip} == after_all

    # as_of: the figures from the events stamped before the minute of the time asked.
    span = (stream[-1].at - stream[0].at).total_seconds() + 120
    for offset in data.draw(st.lists(st.floats(-60, span), min_size=1, max_size=4), label="as_of"):
        at: datetime = stream[0].at + timedelta(seconds=offset)
        minute = minute_of(at)
        for comparison in COMPARISONS:
            figures = run(read_as_of(conn, comparison, minute, schema=SCHEMA))
            expected = history_at(stream, limit, time_of(minute))
            for tool in TOOLS:
                assert figures.get(tool, (0, 0)) == expected.get((comparison, tool), (0, 0))

    # verify's in-memory fold, batch by batch, gives the rows the projector wrote.
    state, history = FoldState(), HistoryBatch()
    pairs = list(enumerate(stream, start=1))
    for start in range(0, len(pairs), 7):
        outcome = fold(pairs[start : start + 7], state, ballots_per_client_day=limit)
        state.absorb(outcome)
        history.add(outcome.changes, ())
    assert history_of(state, history) == run(_live_rows(conn))
