"""Dead letters: messages the projector could not fold, kept with their reason; shown, retried or discarded.

A retry decodes each letter with today's reader. Those that now decode are folded into the live projection
(their sequence is older than the position, so they go through the fold's per-ballot sequence rule, which
orders them correctly against everything applied since) and leave the table; the rest stay, with the new reason.
A discard moves a letter to ``dead_letters_discarded`` with the operator's reason (infra/migrations/0006): it is
never folded, and a rebuild does not set it aside again. The message itself stays in the stream, which is
append-only; ``show`` reads its headers from there.
"""

from datetime import datetime

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from contracts.subjects import TALLY_RELOAD_SUBJECT, VOTES_STREAM
from services.tally.layout import partition_positions
from services.tally.store import Projection, StreamRecord

PREVIEW_CHARS = 200
MAX_REASON = 500
MAX_SEQ = 2**63 - 1
"""Stream sequences are Postgres bigints: a larger number names no letter."""


class DeadLetter(msgspec.Struct, frozen=True):
    seq: int
    subject: str
    reason: str
    recorded_at: datetime
    data: str
    """The raw message, decoded as UTF-8 with replacement characters, cut at ``PREVIEW_CHARS`` characters."""
    size: int
    """The raw message's length in bytes."""


class DeadLetterDetail(msgspec.Struct, frozen=True):
    """One letter in full (``shipskip dead-letters show SEQ``)."""

    seq: int
    subject: str
    reason: str
    recorded_at: datetime
    size: int
    data: str
    """The raw message as text when it is UTF-8; else Python's escaped form of the bytes (``b'...'``)."""
    utf8: bool
    headers: dict[str, str] | None
    """The message's headers as the stream holds them; None when the stream no longer has the message."""
    stored_at: datetime | None
    """When the stream stored it (None: not in the stream)."""


class Discarded(msgspec.Struct, frozen=True):
    seq: int
    subject: str
    died_because: str
    recorded_at: datetime
    discard_reason: str
    discarded_at: datetime
    data: str
    """As in ``DeadLetter``: a preview."""
    already: bool = False
    """It had been discarded before (this call changed nothing)."""


class RetryOutcome(msgspec.Struct, frozen=True):
    seq: int
    applied: bool
    reason: str | None
    """Why it is still dead (None: applied)."""


class RetryReport(msgspec.Struct, frozen=True):
    applied: list[int]
    still_dead: list[int]
    letters: list[RetryOutcome]


class NoSuchDeadLetter(LookupError):
    def __init__(self, seqs: list[int]) -> None:
        self.seqs = seqs
        names = ", ".join(f"#{seq}" for seq in seqs)
        super().__init__(
            f"no dead letter {names}" if len(seqs) == 1 else f"no dead letters {names}",
        )


class InvalidDiscard(ValueError):
    pass


def _preview(data: bytes) -> str:
    return data[: PREVIEW_CHARS * 4].decode(errors="replace")[:PREVIEW_CHARS]


async def list_dead_letters(pool: asyncpg.Pool, limit: int = 100) -> tuple[list[DeadLetter], int]:
    """The first ``limit`` letters by sequence, and how many there are in all."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        total = int(await conn.fetchval("select count(*) from dead_letters"))
        rows = await conn.fetch(
            "select seq, subject, reason, recorded_at, data from dead_letters order by seq limit $1", limit
        )
    letters = [
        DeadLetter(r["seq"], r["subject"], r["reason"], r["recorded_at"], _preview(r["data"]), len(r["data"]))
        for r in rows
    ]
    return letters, total


async def list_discarded(pool: asyncpg.Pool, limit: int = 100) -> tuple[list[Discarded], int]:
    """The latest ``limit`` discarded letters, newest first, and how many there are in all."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        total = int(await conn.fetchval("select count(*) from dead_letters_discarded"))
        rows = await conn.fetch(
            "select seq, subject, died_because, recorded_at, discard_reason, discarded_at, data"
            " from dead_letters_discarded order by discarded_at desc, seq desc limit $1",
            limit,
        )
    discarded = [
        Discarded(
            r["seq"],
            r["subject"],
            r["died_because"],
            r["recorded_at"],
            r["discard_reason"],
            r["discarded_at"],
            _preview(r["data"]),
        )
        for r in rows
    ]
    return discarded, total


def _check_seqs(seqs: list[int]) -> None:
    out_of_range = [seq for seq in seqs if not 1 <= seq <= MAX_SEQ]
    if out_of_range:
        raise NoSuchDeadLetter(out_of_range)


async def show_dead_letter(pool: asyncpg.Pool, nc: NATS, seq: int) -> DeadLetterDetail:
    _check_seqs([seq])
    row = await pool.fetchrow("select seq, subject, reason, recorded_at, data from dead_letters where seq = $1", seq)
    if row is None:
        raise NoSuchDeadLetter([seq])
    data = bytes(row["data"])
    try:
        text, utf8 = data.decode(), True
    except UnicodeDecodeError:
        text, utf8 = repr(data), False
    headers: dict[str, str] | None = None
    stored_at = None
    try:
        message = await nc.jetstream().get_msg(VOTES_STREAM, seq)
    except NotFoundError:
        pass
    else:
        headers = dict(message.headers or {})
        stored_at = message.time
    return DeadLetterDetail(
        seq=row["seq"],
        subject=row["subject"],
        reason=row["reason"],
        recorded_at=row["recorded_at"],
        size=len(data),
        data=text,
        utf8=utf8,
        headers=headers,
        stored_at=stored_at,
    )


async def retry_dead_letters(
    pool: asyncpg.Pool, projection: Projection, nc: NATS, seqs: list[int] | None = None
) -> RetryReport:
    """Fold the letters ``seqs`` (None: every one) with today's reader; NoSuchDeadLetter names any not kept."""
    wanted = sorted(set(seqs)) if seqs is not None else None
    _check_seqs(wanted or [])
    async with pool.acquire() as conn, conn.transaction():
        # The live position rows first: every partition's projector waits while letters are folded in.
        await partition_positions(conn, lock=True)
        if wanted is None:
            rows = await conn.fetch("select seq, subject, data from dead_letters order by seq for update")
        else:
            rows = await conn.fetch(
                "select seq, subject, data from dead_letters where seq = any($1::bigint[]) order by seq for update",
                wanted,
            )
            missing = sorted(set(wanted) - {r["seq"] for r in rows})
            if missing:
                raise NoSuchDeadLetter(missing)
        records = [StreamRecord(r["seq"], r["subject"], bytes(r["data"])) for r in rows]
        still_dead: list[int] = []
        applied: list[int] = []
        for record in records:
            result = await projection.apply_records(conn, [record])
            (still_dead if result.dead_letters else applied).append(record.seq)
        if applied:
            await conn.execute("delete from dead_letters where seq = any($1::bigint[])", applied)
        reasons = {
            r["seq"]: r["reason"]
            for r in await conn.fetch("select seq, reason from dead_letters where seq = any($1::bigint[])", still_dead)
        }
    outcomes = [RetryOutcome(record.seq, record.seq not in reasons, reasons.get(record.seq)) for record in records]
    if applied and nc.is_connected:
        # Folded outside the projector, so no change notice went out: read views reload instead.
        await nc.publish(TALLY_RELOAD_SUBJECT, b"dead-letters")
    return RetryReport(applied=applied, still_dead=still_dead, letters=outcomes)


async def discard_dead_letter(pool: asyncpg.Pool, seq: int, reason: str) -> Discarded:
    """Move one letter to the audit table with the operator's reason; it is never folded.

    One discarded already is answered as it was kept (``already``), the first reason staying.
    """
    _check_seqs([seq])
    reason = reason.strip()
    if not 1 <= len(reason) <= MAX_REASON:
        raise InvalidDiscard(f"give a reason of 1 to {MAX_REASON} characters")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "with gone as (delete from dead_letters where seq = $1 returning seq, subject, data, reason, recorded_at)"
            " insert into dead_letters_discarded"
            " (seq, subject, data, died_because, recorded_at, discard_reason)"
            " select seq, subject, data, reason, recorded_at, $2 from gone"
            " returning seq, subject, died_because, recorded_at, discard_reason, discarded_at, data",
            seq,
            reason,
        )
        already = row is None
        if already:
            row = await conn.fetchrow(
                "select seq, subject, died_because, recorded_at, discard_reason, discarded_at, data"
                " from dead_letters_discarded where seq = $1",
                seq,
            )
    if row is None:
        raise NoSuchDeadLetter([seq])
    return Discarded(
        row["seq"],
        row["subject"],
        row["died_because"],
        row["recorded_at"],
        row["discard_reason"],
        row["discarded_at"],
        _preview(row["data"]),
        already,
    )
