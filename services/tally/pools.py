"""Postgres connections of the processes that fold the stream into the projection's tables.

The fold's statements are prepared once per connection (asyncpg caches them) and run for as long as the process
lives, while the ballots table grows from nothing to millions of rows. Postgres switches a prepared statement to
a generic plan after five runs and keeps it until the table is analyzed: one planned while ``ballots`` was nearly
empty hash-joins a batch's keys against a sequential scan of the whole table, so each batch costs more the more
ballots there are (measured: 30 µs of Postgres CPU per event at the start, 230 µs once 100,000 voters had voted,
with autovacuum's analyze not yet run). Planned for each run's own arguments and the table's current size
instead, a batch's ballots are looked up by the primary key however large the table has grown; planning costs
a few µs per statement.
"""

import asyncpg

FOLDING_SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


async def folding_pool(database_url: str, *, max_size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        database_url, min_size=1, max_size=max_size, server_settings=FOLDING_SERVER_SETTINGS
    )
