"""A projector's batches look their ballots up by the primary key however large the table grows meanwhile.

One connection folds for the whole life of a projector, with its statements prepared once; the ballots table
starts empty and grows to millions of rows under them. Plans cached while it was empty (Postgres uses a generic
plan after five runs of a prepared statement, and keeps it until the table is analyzed) read the whole table for
each batch. services/tally/pools.py is what prevents it; this shows it on a real Postgres.
"""

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from contracts.events import Origin, VoteCast, encode_event
from contracts.subjects import votes_subject
from infra.migrate import migrate
from infra.stack.servers import ServerAddresses
from services.tally.pools import folding_pool
from services.tally.store import PROJECTION_TABLES, Projection, StreamRecord
from tests.support import DEMO_TOOLS

SCHEMA = "fold_plans_test"
COMPARISON = "llama-4-scout-vs-windsurf-swe-1"
TOOLS = DEMO_TOOLS[COMPARISON]
AT = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
async def pool(servers: ServerAddresses) -> AsyncIterator[asyncpg.Pool]:
    await migrate(servers.database_url)  # the live tables are the template of ours
    pool = await folding_pool(servers.database_url, max_size=1)  # one connection: every batch reuses its plans
    await pool.execute(f"drop schema if exists {SCHEMA} cascade; create schema {SCHEMA}")
    for table in PROJECTION_TABLES:
        await pool.execute(f"create table {SCHEMA}.{table} (like public.{table} including all)")
    try:
        yield pool
    finally:
        await pool.execute(f"drop schema if exists {SCHEMA} cascade")
        await pool.close()


# This backend's counts not yet flushed to the shared statistics (earlier transactions' too): read before and after.
_SCANS = "select seq_scan from pg_stat_xact_user_tables where schemaname = $1 and relname = 'ballots'"


def _casts(first_seq: int, voters: range) -> list[StreamRecord]:
    records = []
    for offset, voter in enumerate(voters):
        event = VoteCast(
            event_id=f"event-{first_seq + offset}", comparison_id=COMPARISON, tool_id=TOOLS[voter % 2],
            verdict="ship", voter_id=f"{voter:064x}", at=AT, origin=Origin(client="client-1"),
        )  # fmt: skip
        records.append(StreamRecord(first_seq + offset, votes_subject(COMPARISON), encode_event(event)))
    return records


async def _fold(pool: asyncpg.Pool, projection: Projection, records: list[StreamRecord]) -> int:
    """Fold one batch; the sequential scans of the ballots table it took."""
    async with pool.acquire() as conn, conn.transaction():
        before = await conn.fetchval(_SCANS, SCHEMA)
        await projection.apply_batch(conn, records)
        return int(await conn.fetchval(_SCANS, SCHEMA) - before)


async def test_a_grown_ballots_table_is_not_scanned_by_plans_made_while_it_was_empty(pool: asyncpg.Pool) -> None:
    projection = Projection(ballots_per_client_day=10**9, schema=SCHEMA)
    seq = 1
    for batch in range(10):  # past the five runs after which Postgres may settle on a generic plan
        await _fold(pool, projection, _casts(seq, range(batch * 5, batch * 5 + 5)))
        seq += 5
    # The table grows far past what those plans were made for, unanalyzed (autovacuum has not got to it yet).
    await pool.copy_records_to_table(
        "ballots",
        schema_name=SCHEMA,
        records=[(COMPARISON, TOOLS[v % 2], f"{v:064x}", "ship", 1, True) for v in range(1000, 61_000)],
        columns=("comparison_id", "tool_id", "voter_id", "verdict", "seq", "counted"),
    )
    # Changes of mind of voters among them: each batch's ballots are read by key, never by reading them all.
    for batch in range(3):
        first = 1000 + batch * 50
        assert await _fold(pool, projection, _casts(seq, range(first, first + 50))) == 0
        seq += 50
    assert await pool.fetchval(f"select count(*) from {SCHEMA}.ballots") == 60_050  # noqa: S608 (a constant)
