"""Dead letters: messages the projector could not fold, kept with their reason; retried after a fix.

A retry decodes each letter with today's reader. Those that now decode are folded into the live projection
(their sequence is older than the position, so they go through the fold's per-ballot sequence rule, which
orders them correctly against everything applied since) and leave the table; the rest stay, with the new reason.
"""

from datetime import datetime

import asyncpg
import msgspec
from nats.aio.client import Client as NATS

from contracts.subjects import TALLY_RELOAD_SUBJECT
from services.tally.layout import partition_positions
from services.tally.store import Projection, StreamRecord


class DeadLetter(msgspec.Struct, frozen=True):
    seq: int
    subject: str
    reason: str
    recorded_at: datetime
    data: str
    """The raw message, decoded as UTF-8 with replacement characters, cut at 500 characters."""


class RetryReport(msgspec.Struct, frozen=True):
    applied: list[int]
    still_dead: list[int]


async def list_dead_letters(pool: asyncpg.Pool, limit: int = 100) -> list[DeadLetter]:
    rows = await pool.fetch(
        "select seq, subject, reason, recorded_at, data from dead_letters order by seq limit $1", limit
    )
    return [
        DeadLetter(
            r["seq"], r["subject"], r["reason"], r["recorded_at"], bytes(r["data"])[:500].decode(errors="replace")
        )
        for r in rows
    ]


async def retry_dead_letters(pool: asyncpg.Pool, projection: Projection, nc: NATS) -> RetryReport:
    applied: list[int] = []
    still_dead: list[int] = []
    async with pool.acquire() as conn, conn.transaction():
        # The live position rows first: every partition's projector waits while letters are folded in.
        await partition_positions(conn, lock=True)
        rows = await conn.fetch("select seq, subject, data from dead_letters order by seq for update")
        records = [StreamRecord(r["seq"], r["subject"], bytes(r["data"])) for r in rows]
        for record in records:
            result = await projection.apply_records(conn, [record])
            if result.dead_letters:
                still_dead.append(record.seq)
            else:
                applied.append(record.seq)
        if applied:
            await conn.execute("delete from dead_letters where seq = any($1::bigint[])", applied)
    if applied and nc.is_connected:
        # Folded outside the projector, so no change notice went out: read views reload instead.
        await nc.publish(TALLY_RELOAD_SUBJECT, b"dead-letters")
    return RetryReport(applied=applied, still_dead=still_dead)
