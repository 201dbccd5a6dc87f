"""Postgres side of the projection: fold one batch of stream messages in one transaction.

The transaction reads the position, skips what it already applied, reads the ballots the batch touches, writes
the changed ballots, the tally deltas, the dead letters, and the new position, all or nothing
(the ``eventsourcing`` library's tracking-record pattern). Writes are set-based (``unnest``), one statement each.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from contracts.events import Event, decode_event
from contracts.subjects import comparison_of_subject
from services.tally.fold import Ballot, BallotKey, FoldOutcome, ballot_key, fold

LIVE_PROJECTION = "tally"

Connection = asyncpg.Connection | PoolConnectionProxy
"""A plain connection or one borrowed from a pool."""


class StreamRecord(NamedTuple):
    """One message as fetched from the stream."""

    seq: int
    subject: str
    data: bytes


@dataclass
class BatchResult:
    position: int
    """The stream sequence folded up to, after this batch."""
    outcome: FoldOutcome = field(default_factory=FoldOutcome)
    dead_letters: int = 0
    skipped: int = 0
    """Messages at or below the position already recorded: redeliveries."""


async def read_position(conn: Connection, projection: str = LIVE_PROJECTION) -> int:
    seq = await conn.fetchval("select seq from projection_position where projection = $1", projection)
    return int(seq) if seq is not None else 0


def decode_records(
    records: Sequence[StreamRecord],
) -> tuple[list[tuple[int, Event]], list[tuple[StreamRecord, str]]]:
    """Split into decoded events and dead letters with their reasons."""
    events: list[tuple[int, Event]] = []
    dead: list[tuple[StreamRecord, str]] = []
    for record in records:
        try:
            event = decode_event(record.data)
        except msgspec.DecodeError as exc:
            dead.append((record, f"undecodable event: {exc}"))
            continue
        if comparison_of_subject(record.subject) != event.comparison_id:
            dead.append((record, f"subject {record.subject!r} does not match comparison {event.comparison_id!r}"))
            continue
        events.append((record.seq, event))
    return events, dead


async def apply_batch(
    conn: Connection, records: Sequence[StreamRecord], projection: str = LIVE_PROJECTION
) -> BatchResult:
    """Fold ``records`` into the projection; must be called inside a transaction."""
    position = await conn.fetchval("select seq from projection_position where projection = $1 for update", projection)
    position = int(position) if position is not None else 0
    fresh = [record for record in records if record.seq > position]
    result = BatchResult(position=position, skipped=len(records) - len(fresh))
    if not fresh:
        return result
    events, dead = decode_records(fresh)
    current = await _ballots_for(conn, {ballot_key(event) for _, event in events})
    result.outcome = fold(events, current)
    await _write_ballots(conn, result.outcome.ballots)
    await _write_deltas(conn, result.outcome.deltas)
    if dead:
        await conn.executemany(
            "insert into dead_letters (seq, subject, data, reason) values ($1, $2, $3, $4)"
            " on conflict (seq) do nothing",
            [(record.seq, record.subject, record.data, reason) for record, reason in dead],
        )
    result.dead_letters = len(dead)
    result.position = max(record.seq for record in fresh)
    await conn.execute(
        "insert into projection_position (projection, seq) values ($1, $2)"
        " on conflict (projection) do update set seq = excluded.seq",
        projection,
        result.position,
    )
    return result


async def _ballots_for(conn: Connection, keys: set[BallotKey]) -> dict[BallotKey, Ballot]:
    if not keys:
        return {}
    comparisons, tools, voters = (list(column) for column in zip(*keys, strict=True))
    rows = await conn.fetch(
        "select b.comparison_id, b.tool_id, b.voter_id, b.verdict, b.seq"
        " from unnest($1::text[], $2::text[], $3::text[]) as k(comparison_id, tool_id, voter_id)"
        " join ballots b using (comparison_id, tool_id, voter_id)",
        comparisons,
        tools,
        voters,
    )
    return {(r["comparison_id"], r["tool_id"], r["voter_id"]): Ballot(r["verdict"], r["seq"]) for r in rows}


async def _write_ballots(conn: Connection, ballots: dict[BallotKey, Ballot]) -> None:
    if not ballots:
        return
    keys = list(ballots)
    await conn.execute(
        "insert into ballots (comparison_id, tool_id, voter_id, verdict, seq)"
        " select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])"
        " on conflict (comparison_id, tool_id, voter_id)"
        " do update set verdict = excluded.verdict, seq = excluded.seq",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [ballots[k].verdict for k in keys],
        [ballots[k].seq for k in keys],
    )


async def _write_deltas(conn: Connection, deltas: dict[tuple[str, str], list[int]]) -> None:
    if not deltas:
        return
    keys = list(deltas)
    await conn.execute(
        "insert into tallies (comparison_id, tool_id, ship, skip)"
        " select * from unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])"
        " on conflict (comparison_id, tool_id)"
        " do update set ship = tallies.ship + excluded.ship, skip = tallies.skip + excluded.skip",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [deltas[k][0] for k in keys],
        [deltas[k][1] for k in keys],
    )


class ToolCounts(NamedTuple):
    ship: int
    skip: int


async def read_tallies(
    conn: Connection, comparison_ids: Sequence[str] | None = None
) -> dict[tuple[str, str], ToolCounts]:
    if comparison_ids is None:
        rows = await conn.fetch("select comparison_id, tool_id, ship, skip from tallies")
    else:
        rows = await conn.fetch(
            "select comparison_id, tool_id, ship, skip from tallies where comparison_id = any($1::text[])",
            list(comparison_ids),
        )
    return {(r["comparison_id"], r["tool_id"]): ToolCounts(r["ship"], r["skip"]) for r in rows}
