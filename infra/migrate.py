"""Apply the SQL migrations under ``infra/migrations`` once each, in name order, recorded in the database."""

import logging
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"

# Any constant works; it only has to be the same for every process that migrates this database.
_LOCK_ID = 0x5A1B_5C1F


async def migrate(database_url: str) -> list[str]:
    """Apply what is missing; returns the versions applied now. Safe to run from several processes at once."""
    conn = await asyncpg.connect(database_url)
    applied_now: list[str] = []
    try:
        await conn.execute("select pg_advisory_lock($1)", _LOCK_ID)
        await conn.execute(
            "create table if not exists schema_migrations ("
            " version text primary key, applied_at timestamptz not null default now())"
        )
        done = {row["version"] for row in await conn.fetch("select version from schema_migrations")}
        for path in sorted(MIGRATIONS.glob("*.sql")):
            if path.stem in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("insert into schema_migrations (version) values ($1)", path.stem)
            log.info("applied migration %s", path.stem)
            applied_now.append(path.stem)
    finally:
        await conn.execute("select pg_advisory_unlock($1)", _LOCK_ID)
        await conn.close()
    return applied_now
