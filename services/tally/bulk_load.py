"""A rebuild's first pass: fold the stream in memory, then write the whole result into the empty rebuild schema.

Folding through the tables costs every batch a round of reads (ballots, voids, quotas it touches) and four
upserts; a rebuild starts from nothing, so one state in memory holds all it would read, and COPY writes the rows
once at the end. The fold is the same pure function the projector runs, batch by batch as it would see them, so
the rows are the ones the batch-by-batch path writes (services/tally/store.py), tally rows holding zero included.

Memory is bounded: past ``max_ballots`` ballots (SHIPSKIP_REBUILD_MEMORY_BALLOTS) the pass stops, its rows are
written, and the rebuild folds the rest of the stream through the tables as before.
"""

from dataclasses import dataclass, field

import asyncpg

from services.tally.fold import FoldState, TallyKey, fold
from services.tally.replay import FoldBatch, StreamReplay
from services.tally.store import POSITION_ROW, Connection, Projection, StreamRecord, decode_records, record_dead_letters

MAX_BALLOTS = 2_000_000
"""The default of SHIPSKIP_REBUILD_MEMORY_BALLOTS: ballots held in memory at most (some 400 MB of Python objects)."""

_COLUMNS = {
    "ballots": ("comparison_id", "tool_id", "voter_id", "verdict", "seq", "counted"),
    "tallies": ("comparison_id", "tool_id", "ship", "skip", "uncounted_ship", "uncounted_skip"),
    "client_quotas": ("comparison_id", "client", "day", "ballots"),
    "voided_voters": ("voter_id", "seq", "reason"),
    "projection_position": ("projection", "seq"),
}


@dataclass
class BulkFold:
    """The state of a first pass: what the fold decided, and the voids with their sequence and reason."""

    ballots_per_client_day: int
    state: FoldState = field(default_factory=FoldState)
    voided: dict[str, tuple[int, str]] = field(default_factory=dict)

    def take(self, records: list[StreamRecord]) -> list[tuple[StreamRecord, str]]:
        """Fold one batch in memory; its dead letters are returned for the caller to record."""
        events, dead = decode_records(records)
        outcome = fold(events, self.state, ballots_per_client_day=self.ballots_per_client_day)
        self.state.absorb(outcome)
        self.voided.update(outcome.voided)
        return dead

    def tally_rows(self) -> list[tuple[str, str, int, int, int, int]]:
        """One row per tool a ballot was ever cast on (as the upserts leave it: a retracted tool keeps zeros)."""
        counts: dict[TallyKey, list[int]] = {}
        for (comparison_id, tool_id, _), ballot in self.state.ballots.items():
            if ballot.counted is None:
                continue  # never cast (a retraction came first): the tables hold no tally row for it either
            row = counts.setdefault((comparison_id, tool_id), [0, 0, 0, 0])
            if ballot.verdict is not None:
                row[(0 if ballot.verdict == "ship" else 1) + (0 if ballot.counted else 2)] += 1
        return [(c, t, *values) for (c, t), values in counts.items()]  # type: ignore[misc]

    async def write(self, conn: Connection, schema: str, position: int) -> None:
        """COPY every row into ``schema``'s empty projection tables, inside the caller's transaction."""
        ballots = [(*key, b.verdict, b.seq, b.counted) for key, b in self.state.ballots.items()]
        quotas = [(*key, used) for key, used in self.state.quotas.items()]
        voided = [(voter, seq, reason) for voter, (seq, reason) in self.voided.items()]
        for table, rows in (
            ("ballots", ballots),
            ("tallies", self.tally_rows()),
            ("client_quotas", quotas),
            ("voided_voters", voided),
            ("projection_position", [(POSITION_ROW, position)] if position else []),
        ):
            if rows:
                await conn.copy_records_to_table(table, records=rows, columns=_COLUMNS[table], schema_name=schema)


async def bulk_load(
    pool: asyncpg.Pool, projection: Projection, replay: StreamReplay, head: int, progress: FoldBatch, max_ballots: int
) -> int:
    """Fold the stream up to ``head`` (or ``max_ballots``) in memory and write it into ``projection``'s schema.

    ``progress`` is called after every batch. Returns the number of ballots written.
    """
    bulk = BulkFold(projection.ballots_per_client_day)

    async def take(records: list[StreamRecord]) -> None:
        dead = bulk.take(records)
        if dead:
            async with pool.acquire() as conn:
                await record_dead_letters(conn, dead)
        await progress(records)

    await replay.fold_until(head, take, stop=lambda: len(bulk.state.ballots) >= max_ballots)
    async with pool.acquire() as conn, conn.transaction():
        await bulk.write(conn, projection.schema, replay.folded_to)
    return len(bulk.state.ballots)
